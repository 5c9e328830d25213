"""JSON Lines read one line at a time.

pyarrow's JSON reader fails a whole file on one bad line and holds every
later line to the types its first block had (a text that is a number, an id
that turns from number to string). Parsed line by line, a line that is not
a JSON object is one dead letter, and a value of another type is the
record's own problem: a text that is no string is dead-lettered by the
validation every input goes through.
"""
import json
from typing import Dict, Iterator, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.lines import read_lines
from schemas import columns as c

# Objects sampled to plan the columns (their names, carried columns' types).
SAMPLE_OBJECTS = 1000


def line_limit(max_review_bytes: int) -> int:
  """The longest line read: escapes make a text up to 6 bytes a character
  (\\uXXXX), and a line holds other fields too."""
  return 6 * max_review_bytes + (1 << 16)


def parse(line: bytes) -> Tuple[Optional[dict], Optional[str], Optional[str]]:
  """(object, None, None), or (None, dead-letter reason, detail)."""
  try:
    text = line.decode("utf-8").lstrip("\ufeff")  # a BOM (Windows exports)
  except UnicodeDecodeError as e:
    return None, c.REASON_UNDECODABLE, str(e)
  try:
    value = json.loads(text)
  except ValueError as e:
    return None, c.REASON_MALFORMED_ROW, f"not JSON: {e}"
  if not isinstance(value, dict):
    return None, c.REASON_MALFORMED_ROW, (
        f"a JSON {type(value).__name__}, not an object")
  # An escaped lone surrogate ("\ud800") loads but has no UTF-8 form, so no
  # Parquet column can hold it.
  if "\\ud" in text.lower():
    try:
      json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
      return None, c.REASON_UNDECODABLE, f"an escaped lone surrogate ({e})"
  return value, None, None


def objects(stream, *, max_review_bytes: int
            ) -> Iterator[Tuple[int, Optional[dict], Optional[bytes],
                                Optional[str], Optional[str]]]:
  """(line number, object, line, reason, detail) for each non-blank line:
  the object, or None with the reason it is not one."""
  for number, line, length in read_lines(stream, line_limit(max_review_bytes)):
    if line is None:
      yield number, None, None, c.REASON_TOO_LONG, f"a line of {length} bytes"
      continue
    if not line.strip():
      continue
    value, reason, detail = parse(line)
    yield number, value, line, reason, detail


def sample_schema(stream, *, max_review_bytes: int) -> pa.Schema:
  """The columns of the first objects, typed as pyarrow infers their
  values; a column whose values disagree (or are all null) is a string
  column, its values written as JSON text (`carried_value`)."""
  values: Dict[str, list] = {}
  seen = 0
  for _, value, _, _, _ in objects(stream, max_review_bytes=max_review_bytes):
    if value is None:
      continue
    for name, item in value.items():
      values.setdefault(name, []).append(item)
    seen += 1
    if seen >= SAMPLE_OBJECTS:
      break
  fields = []
  for name, items in values.items():
    try:
      kind = pa.array(items).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
      kind = pa.null()
    if pa.types.is_string(kind):
      kind = _timestamp_or_string(items)
    fields.append((name, pa.string() if pa.types.is_null(kind) else kind))
  return pa.schema(fields)


def _timestamp_or_string(items: list) -> pa.DataType:
  """timestamp[s] for ISO 8601 date-times, as pyarrow's JSON reader infers
  them (so a column keeps the type earlier runs gave it), else string."""
  try:
    pc.cast(pa.array(items, pa.string()), pa.timestamp("s"))
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    return pa.string()
  return pa.timestamp("s")


def carried_value(value, kind: pa.DataType):
  """`value` as a column of `kind` takes it; raises ValueError if it cannot."""
  if value is None:
    return None
  if pa.types.is_string(kind) and not isinstance(value, str):
    return json.dumps(value, ensure_ascii=False)
  try:
    if pa.types.is_timestamp(kind) and isinstance(value, str):
      return pc.cast(pa.array([value], pa.string()), kind)[0].as_py()
    converted = pa.scalar(value, type=kind).as_py()
  except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
    raise ValueError(f"{value!r} is not {kind}") from e
  # pyarrow truncates 2.5 into an integer column: a changed value is refused.
  if isinstance(value, (int, float)) and converted != value:
    raise ValueError(f"{value!r} is not {kind}")
  return converted
