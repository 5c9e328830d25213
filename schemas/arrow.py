"""Arrow schemas of the scored and dead-letter outputs."""
import json
from typing import Iterable, Mapping, Optional, Sequence

import pyarrow as pa

from schemas import columns as c


def scored_schema_metadata(*, model_name: str, model_fingerprint: str,
                           threshold: Optional[float],
                           class_names: Sequence[str]) -> dict:
  """Footer metadata that lets analytics know which model made the scores
  (no threshold for a model over three or more classes)."""
  metadata = {
      c.METADATA_MODEL_NAME: model_name.encode(),
      c.METADATA_MODEL_FINGERPRINT: model_fingerprint.encode(),
      c.METADATA_CLASS_NAMES: json.dumps(list(class_names)).encode(),
  }
  if threshold is not None:
    metadata[c.METADATA_THRESHOLD] = repr(float(threshold)).encode()
  return metadata


def scored_schema(carried: Iterable[pa.Field] = (),
                  metadata: Optional[Mapping[bytes, bytes]] = None, *,
                  class_count: int = 2) -> pa.Schema:
  """Schema of scored rows: fixed columns first (with every class's
  probability for 3+ classes), then carried input columns."""
  fields = [
      pa.field(c.REVIEW_ID, pa.string(), nullable=False),
      pa.field(c.SCORE, pa.float32(), nullable=False),
      pa.field(c.LABEL_NAME, pa.string(), nullable=False),
      pa.field(c.LABEL_ID, pa.int8(), nullable=False),
      pa.field(c.MODEL_FINGERPRINT, pa.string(), nullable=False),
      pa.field(c.SOURCE_FILE, pa.string(), nullable=False),
  ]
  if class_count > 2:
    fields.append(pa.field(c.CLASS_SCORES,
                           pa.list_(pa.float32(), class_count), nullable=False))
  taken = {f.name for f in fields}
  for field in carried:
    if field.name in taken:
      raise ValueError(
          f"carried column {field.name!r} clashes with an output column")
    fields.append(field)
    taken.add(field.name)
  return pa.schema(fields, metadata=dict(metadata or {}))


def dead_letter_schema() -> pa.Schema:
  """Schema of the dead-letter output: what could not be scored, and why."""
  return pa.schema([
      pa.field(c.REVIEW_ID, pa.string()),
      pa.field(c.SOURCE_FILE, pa.string()),
      pa.field(c.ERROR_REASON, pa.string(), nullable=False),
      pa.field(c.ERROR_DETAIL, pa.string()),
      pa.field(c.ERROR_TEXT_PREVIEW, pa.string()),
  ])
