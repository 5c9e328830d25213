"""Pseudo-labels for self-training (`train --pseudo-labels`): the confident
scores of one or more scoring runs over unlabelled reviews, with their
texts, read through the runs' manifests."""
import dataclasses
import hashlib
import pathlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import pyarrow.compute as pc
import pyarrow as pa

from runtime.filesystems import as_path
from schemas import columns
from schemas.inputs import TABLE_FORMATS
from schemas.manifest import FileState, ManifestError, RunManifest, read_manifest
from train.data.reviews import DataError, read_table_file, table_parts


@dataclasses.dataclass
class PseudoLabelled:
  """Reviews labelled by a teacher model (a scoring run's output).

  `targets`: for two classes the positive class's probability (soft) or 0/1
  (hard); for more, class indices. `label_ids`: the teacher's labels.
  """
  ids: List[str]
  texts: List[str]
  targets: np.ndarray
  label_ids: np.ndarray
  summary: dict

  def __len__(self):
    return len(self.texts)

  def fingerprint(self) -> str:
    digest = hashlib.sha256()
    for review_id, text, target in zip(self.ids, self.texts, self.targets,
                                       strict=True):
      digest.update(f"{review_id}\0{float(target):.6g}\0".encode(
          "utf-8", "surrogatepass"))
      digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()

  def without(self, keep: np.ndarray) -> "PseudoLabelled":
    """Only the rows where `keep` is true, the summary's counts with them."""
    rows = np.flatnonzero(keep)
    label_ids = self.label_ids[keep]
    summary = dict(self.summary, kept=len(rows), kept_per_class=np.bincount(
        label_ids, minlength=len(self.summary["kept_per_class"])).tolist())
    return dataclasses.replace(
        self, ids=[self.ids[i] for i in rows],
        texts=[self.texts[i] for i in rows], targets=self.targets[keep],
        label_ids=label_ids, summary=summary)


def _read_manifest(prefix: str) -> RunManifest:
  try:
    return read_manifest(str(prefix))
  except ManifestError as e:
    raise DataError(f"{e}; --pseudo-labels takes the --output PREFIX of a "
                    "finished `reviewscore score` run") from None


def _check_unchanged(prefix: str, recorded: Dict[str, FileState], parts,
                     text_column: str) -> None:
  """The texts read back must be the ones scored: a file whose size or
  modification time differs from the scoring run's record (its manifest's
  `input_files`) may hold other texts under the same ids."""
  from apache_beam.io.filesystems import FileSystems
  for part in parts:
    state = recorded.get(str(part))
    if state is None:  # a manifest of an older version
      continue
    found = FileSystems.match([str(part)])[0].metadata_list
    now = found[0] if found else None
    if now is None or now.size_in_bytes != state.size or (
        state.modified is not None and
        now.last_updated_in_seconds != state.modified):
      raise DataError(f"{prefix}: {part} changed since it was scored, so its "
                      "texts may not be the scored ones; score it again, or "
                      f"score with --carry-columns {text_column}")


def _texts_by_id(prefix: str, manifest: RunManifest, wanted: List[str]
                 ) -> List[str]:
  """The texts of `wanted` ids, read back from the scoring run's own input
  (a table input: Parquet, CSV or JSON Lines), for scores that did not
  carry them."""
  text_column = manifest.reading.text_column or columns.INPUT_TEXT
  id_column = manifest.reading.id_column or columns.INPUT_ID
  source = manifest.input
  if manifest.reading.format not in TABLE_FORMATS or not source:
    raise DataError(f"{prefix}: the scores carry no {text_column!r} column and "
                    "the run's input is not a table to read it back from; "
                    f"score with --carry-columns {text_column}")
  path = as_path(source)
  parts = [path] if path.is_file() else table_parts(path)
  _check_unchanged(prefix, manifest.input_files or {}, parts, text_column)
  by_id = {}
  needed = set(wanted)
  for part in parts:
    table = read_table_file(part)
    if text_column not in table.schema.names or id_column not in table.schema.names:
      raise DataError(f"{part}: no {text_column!r} and {id_column!r} columns to "
                      f"read the scored texts back from; score with "
                      f"--carry-columns {text_column}")
    for review_id, text in zip(pc.cast(table[id_column], pa.string()).to_pylist(),
                               table[text_column].to_pylist(), strict=True):
      if review_id in needed:
        by_id[review_id] = text
  missing = [i for i in wanted if i not in by_id]
  if missing:
    raise DataError(f"{prefix}: {len(missing):,} scored ids are no longer in "
                    f"{source} (first {missing[0]!r}); score with "
                    f"--carry-columns {text_column}")
  return [by_id[i] for i in wanted]


@dataclasses.dataclass
class _TeacherRun:
  """One scoring run over unlabelled reviews, as self-training reads it."""
  prefix: str
  manifest: RunManifest
  table: pa.Table  # ids, probabilities, and the texts when they were carried
  threshold: Optional[float]  # two classes: the decision threshold it served


def _teacher_run(prefix: str, class_names: Sequence[str], text_column: str
                 ) -> _TeacherRun:
  import json
  from schemas import outputs
  manifest = _read_manifest(prefix)
  parts = table_parts(as_path(outputs.score_shards_glob(prefix)))
  tables = [read_table_file(p) for p in parts]
  if not tables:
    raise DataError(f"{prefix}: the manifest is there but no score shards")
  metadata = tables[0].schema.metadata or {}
  teacher_classes = json.loads(metadata.get(columns.METADATA_CLASS_NAMES, b"[]"))
  if list(teacher_classes) != list(class_names):
    raise DataError(f"{prefix}: scored with classes {teacher_classes}, the "
                    f"labelled data has {list(class_names)}")
  probabilities = (columns.SCORE if len(class_names) == 2
                   else columns.CLASS_SCORES)
  carried = text_column in tables[0].schema.names
  table = pa.concat_tables([t.select(
      [columns.REVIEW_ID, probabilities] + ([text_column] if carried else []))
      for t in tables])
  expected = manifest.counts.scored if manifest.counts else None
  if expected is not None and expected != table.num_rows:
    raise DataError(f"{prefix}: {table.num_rows:,} scored rows in the shards, "
                    f"the manifest says {expected:,}")
  threshold = None
  if len(class_names) == 2:
    if columns.METADATA_THRESHOLD not in metadata:
      raise DataError(f"{prefix}: the score shards name no decision threshold "
                      "(not the output of `reviewscore score`?)")
    threshold = float(metadata[columns.METADATA_THRESHOLD])
  return _TeacherRun(str(prefix), manifest, table, threshold)


def _class_probabilities(table: pa.Table, num_classes: int) -> np.ndarray:
  """[rows, classes] float32 probabilities of a teacher's scores."""
  if num_classes == 2:
    positive = table[columns.SCORE].to_numpy().astype(np.float32)
    return np.stack([1.0 - positive, positive], axis=1)
  return np.asarray(table[columns.CLASS_SCORES].combine_chunks().flatten()
                    .to_numpy(), np.float32).reshape(-1, num_classes)


def _unique_ids(run: _TeacherRun) -> List[str]:
  ids = [str(i) for i in run.table[columns.REVIEW_ID].to_pylist()]
  if len(set(ids)) != len(ids):
    raise DataError(f"{run.prefix}: review ids repeat in its scores, so the "
                    "teachers' rows cannot be matched; average teachers over "
                    "input with unique ids")
  return ids


def _kept_texts(runs: Sequence[_TeacherRun], ids: List[str],
                keep_rows: np.ndarray, text_column: str) -> dict:
  """Row → text of the kept rows (ids in the first run's order): from a run
  that carried them, else read back from the first run's table input."""
  for run in runs:
    if text_column in run.table.schema.names:
      carried = run.table[text_column].to_pylist()
      if run is runs[0]:
        return {row: carried[row] for row in keep_rows.tolist()}
      by_id = dict(zip(_unique_ids(run), carried, strict=True))
      return {row: by_id[ids[row]] for row in keep_rows.tolist()}
  texts = _texts_by_id(runs[0].prefix, runs[0].manifest,
                       [ids[row] for row in keep_rows])
  return dict(zip(keep_rows.tolist(), texts, strict=True))


def read_pseudo_labels(prefixes: Sequence[str], *, class_names: Sequence[str],
                       text_column: str = columns.INPUT_TEXT,
                       min_confidence: float, soft: bool) -> PseudoLabelled:
  """The confidently scored reviews of one or more scoring runs over the
  same reviews, with their texts: carried in the scores (`--carry-columns
  text`), or read back by id from the first run's table input.

  Several runs make an ensemble teacher: each review's class probabilities
  are the mean of the runs', and its label the likeliest class (two classes:
  the positive class from the mean of the runs' decision thresholds).
  """
  if isinstance(prefixes, (str, pathlib.Path)):
    prefixes = [prefixes]
  if not prefixes:
    raise ValueError("no scoring run to read pseudo-labels from")
  num_classes = len(class_names)
  runs = [_teacher_run(str(prefix), class_names, text_column)
          for prefix in prefixes]
  first = runs[0]
  # One run may repeat ids (each row is its own example); an ensemble joins
  # its runs on the id, so there they must be unique.
  ids = ([str(i) for i in first.table[columns.REVIEW_ID].to_pylist()]
         if len(runs) == 1 else _unique_ids(first))
  probabilities = _class_probabilities(first.table, num_classes).astype(
      np.float64)
  for run in runs[1:]:
    row_of = {i: row for row, i in enumerate(_unique_ids(run))}
    missing = [i for i in ids if i not in row_of]
    if missing or len(row_of) != len(ids):
      raise DataError(
          f"{run.prefix}: its teacher scored other reviews than "
          f"{first.prefix}'s ({len(row_of):,} against {len(ids):,}"
          + (f"; {missing[0]!r} is not among them" if missing else "")
          + "): average teachers over one input")
    order = np.fromiter((row_of[i] for i in ids), np.int64, len(ids))
    probabilities += _class_probabilities(run.table, num_classes)[order]
  probabilities = (probabilities / len(runs)).astype(np.float32)
  if num_classes == 2:
    # As the served model decides: float32 probability >= float32 threshold.
    threshold = np.float32(np.mean([run.threshold for run in runs]))
    label_id = (probabilities[:, 1] >= threshold).astype(np.int32)
  else:
    label_id = probabilities.argmax(axis=1).astype(np.int32)
  confidence = probabilities.max(axis=1)
  keep = confidence >= min_confidence
  if not keep.any():
    raise DataError(f"{', '.join(run.prefix for run in runs)}: none of the "
                    f"{len(ids):,} scored reviews reaches the confidence "
                    f"{min_confidence:g} (the highest is "
                    f"{float(confidence.max(initial=0.0)):.3f}); lower "
                    "--pseudo-label-confidence")
  positive = probabilities[:, 1]
  targets = (positive if num_classes == 2 and soft else
             label_id.astype(np.float32) if num_classes == 2 else label_id)
  keep_rows = np.flatnonzero(keep)
  texts = _kept_texts(runs, ids, keep_rows, text_column)
  kept_labels = label_id[keep]
  summary = {"sources": [run.prefix for run in runs], "scored": len(ids),
             "kept": int(keep.sum()), "min_confidence": min_confidence,
             "soft": bool(soft and num_classes == 2),
             "kept_per_class": np.bincount(kept_labels,
                                           minlength=num_classes).tolist(),
             "teachers": [run.manifest.model.fingerprint
                          for run in runs]}
  return PseudoLabelled(ids=[ids[i] for i in keep_rows],
                        texts=[texts[i] for i in keep_rows],
                        targets=targets[keep], label_ids=kept_labels,
                        summary=summary)
