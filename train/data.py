"""Labelled reviews: reading aclImdb-style trees or Parquet, and splitting.

Both layouts the tutorial world uses are accepted:
- a folder tree `ROOT/train/<class>/*.txt` (and `ROOT/test/<class>/*.txt`), as
  `text_dataset_from_directory` reads it, the class names being the folder
  names in sorted order (`neg`, `pos`); other folders such as `unsup` are
  ignored;
- tables with a text and a label column, in Parquet, CSV or JSON Lines
  (read by pyarrow): a file, a glob or a folder of parts (`_*` and `.*` files
  skipped), or a directory with `train.parquet` and `test.parquet` (as
  `reviewscore download-imdb` writes it; `.csv` or `.jsonl` too).
"""
import dataclasses
import glob
import hashlib
import pathlib
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pyarrow.compute as pc
import pyarrow as pa
import pyarrow.parquet as pq

from runtime.filesystems import BeamPath, as_path
from schemas import columns
from schemas.inputs import table_format_of
from train.labels import LabelError, LabelScheme

FROM_THE_DATA = LabelScheme()  # two classes, named by the values found


class DataError(Exception):
  """Labelled data cannot be read: missing path, columns or classes."""


@dataclasses.dataclass
class LabelledReviews:
  ids: List[str]
  texts: List[str]
  labels: np.ndarray  # int32 class indices
  source: str
  class_names: Tuple[str, ...]
  dropped: int = 0  # rows of the source the label map assigned to no class

  def __len__(self):
    return len(self.texts)

  def subset(self, indices: np.ndarray) -> "LabelledReviews":
    return dataclasses.replace(self, ids=[self.ids[i] for i in indices],
                               texts=[self.texts[i] for i in indices],
                               labels=self.labels[indices], dropped=0)

  def fingerprint(self) -> str:
    """sha256 over ids, labels and texts: names the exact data a model saw."""
    digest = hashlib.sha256()
    for review_id, text, label in zip(self.ids, self.texts, self.labels, strict=True):
      digest.update(review_id.encode("utf-8", "surrogatepass") + b"\0")
      digest.update(str(int(label)).encode() + b"\0")
      digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()

  def summary(self) -> dict:
    counts = np.bincount(self.labels, minlength=2).tolist() if len(self) else []
    summary = {"source": self.source, "rows": len(self),
               "class_counts": counts, "sha256": self.fingerprint()}
    if self.dropped:
      summary["dropped_by_label_map"] = self.dropped
    return summary


def _read_tree_split(split_dir: pathlib.Path, class_names: Sequence[str]
                     ) -> LabelledReviews:
  if isinstance(split_dir, BeamPath):
    raise DataError(f"{split_dir}: aclImdb-style folder trees are read from "
                    "local folders; on a bucket, use Parquet, CSV or JSON "
                    "Lines files")
  ids, texts, labels = [], [], []
  for label, name in enumerate(class_names):
    class_dir = split_dir / name
    if not class_dir.is_dir():
      raise DataError(f"{split_dir}: missing class folder {name!r}")
    for path in sorted(class_dir.glob("*.txt")):
      ids.append(str(path.relative_to(split_dir.parent).with_suffix("")))
      texts.append(path.read_bytes().decode("utf-8", errors="replace"))
      labels.append(label)
  if not texts:
    raise DataError(f"{split_dir}: no .txt reviews under {list(class_names)}")
  return LabelledReviews(ids=ids, texts=texts,
                         labels=np.asarray(labels, np.int32),
                         source=str(split_dir), class_names=tuple(class_names))


def _read_table_file(path: pathlib.Path) -> pa.Table:
  import pyarrow.csv as pcsv
  import pyarrow.json as pjson
  kind = table_format_of(str(path))
  names = {"parquet": "Parquet", "csv": "CSV", "jsonl": "JSON Lines"}
  if kind is None:
    raise DataError(f"{path}: not a Parquet, CSV or JSON Lines file (by its "
                    "name: .parquet, .csv, .jsonl, .ndjson, compressed too)")
  try:
    source = path
    if isinstance(path, BeamPath):
      # Read whole through Beam (which decompresses by file name): training
      # holds every review in memory anyway.
      with path.open(decompress=kind != "parquet") as f:
        source = pa.BufferReader(f.read())
    if kind == "parquet":
      return pq.read_table(source)
    if kind == "csv":
      return pcsv.read_csv(
          source, parse_options=pcsv.ParseOptions(newlines_in_values=True),
          convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
    return pjson.read_json(source)
  except Exception as e:  # pyarrow raises several types for damaged files
    raise DataError(f"{path}: not a readable {names[kind]} file ({e})") from None


def _table_parts(path: pathlib.Path) -> List[pathlib.Path]:
  """The table files of a folder of parts or a glob, in name order."""
  if isinstance(path, BeamPath):
    found = path.rglob("*") if path.is_dir() else path.glob_matches()
  elif path.is_dir():
    found = [p for p in path.rglob("*") if p.is_file()]
  else:
    found = [pathlib.Path(p) for p in glob.glob(str(path), recursive=True)]
  return sorted(p for p in found
                if not p.name.startswith(("_", ".")) and table_format_of(str(p)))


SPLIT_NAMES = ("train", "test", "unsup")


def _stem(path: pathlib.Path) -> str:
  """`test` for test.parquet, test.csv.gz, test.jsonl..."""
  name = path.name
  while "." in name:
    name = name.rsplit(".", 1)[0]
  return name


def _split_parts(path: pathlib.Path, split: str) -> Optional[List[pathlib.Path]]:
  """A folder's parts for `split`: the files named after it when any part is
  named after a split (train.parquet, test.csv.gz...), else all its parts
  for `train` (a folder of parts is one labelled set), else None."""
  parts = _table_parts(path)
  if any(_stem(p) in SPLIT_NAMES for p in parts):
    named = [p for p in parts if _stem(p) == split]
    return named or None
  return parts if split == "train" and parts else None


def _text_column(column: pa.ChunkedArray, part) -> pa.ChunkedArray:
  """Texts as strings: bytes columns (what some writers store text as) are
  decoded as UTF-8, as scoring reads them; categoricals decoded."""
  if pa.types.is_dictionary(column.type):
    column = column.cast(column.type.value_type)
  if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
    try:
      column = column.cast(pa.string())
    except pa.ArrowInvalid as e:
      raise DataError(f"{part}: the text column holds bytes that are not "
                      f"UTF-8 text ({e})") from None
  return column


def _read_tables(paths, *, text_column: str, label_column: str,
                 id_column: str, labels: LabelScheme,
                 positional_ids: bool = False) -> LabelledReviews:
  """Labelled rows of one or more table files (Parquet, CSV, JSON Lines)."""
  paths = [as_path(p) for p in ([paths] if isinstance(
      paths, (str, pathlib.Path, BeamPath)) else paths)]
  path = paths[0] if len(paths) == 1 else paths[0].parent
  tables = []
  for part in paths:
    table = _read_table_file(part)
    for column in (text_column, label_column):
      if column not in table.schema.names:
        raise DataError(f"{part}: no column {column!r} (columns: "
                        f"{table.schema.names}); name it with "
                        f"--{column == text_column and 'text' or 'label'}-column")
    has_id = id_column in table.schema.names
    if not has_id and not positional_ids:
      raise DataError(f"{part}: no id column {id_column!r} (columns: "
                      f"{table.schema.names}); name it with --id-column, or "
                      "pass --positional-ids to number rows FILE:ROW")
    ids = (pc.cast(table[id_column], pa.string()) if has_id else
           pa.array([f"{part.name}:{i}" for i in range(table.num_rows)]))
    tables.append(pa.table({"id": ids,
                            "text": _text_column(table[text_column], part),
                            "label": table[label_column]}))
  try:
    table = pa.concat_tables(tables, promote_options="permissive")
  except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
    raise DataError(f"{path}: parts whose columns do not agree ({e})") from None
  named_label = label_column
  text_column, label_column, id_column = "text", "label", "id"
  rows = table.num_rows
  table = table.filter(pc.is_valid(table[label_column]))  # unlabelled rows
  if rows and not table.num_rows:
    raise DataError(f"{path}: all {rows:,} rows have a null {named_label!r}: "
                    "no labelled review (name the label with --label-column)")
  try:
    class_ids, class_names = labels.apply(table[label_column], str(path))
  except LabelError as e:
    raise DataError(str(e)) from None
  kept = class_ids >= 0
  dropped = int((~kept).sum())
  if dropped:
    table = table.filter(pa.array(kept))
    class_ids = class_ids[kept]
  texts = table[text_column].to_pylist()
  ids = table[id_column].to_pylist()
  bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
  if bad:
    raise DataError(f"{path}: {len(bad)} rows have null or empty text "
                    f"(first id {ids[bad[0]]!r})")
  return LabelledReviews(ids=[str(i) for i in ids], texts=texts,
                         labels=class_ids, source=str(path),
                         class_names=tuple(class_names), dropped=dropped)


def read_labelled(path, split: str = "train", *, text_column: str = columns.INPUT_TEXT,
                  label_column: str = columns.INPUT_LABEL, id_column: str = columns.INPUT_ID,
                  labels: LabelScheme = FROM_THE_DATA,
                  positional_ids: bool = False
                  ) -> Optional[LabelledReviews]:
  """Reads one split (`train` or `test`) of labelled reviews.

  Returns None when PATH is a directory that simply has no such split (a tree
  without `test/`); raises DataError for anything that is there but broken.
  Read the training split first and the others with its class names
  (`labels.with_class_names(train.class_names)`).
  """
  path = as_path(path)
  parquet_options = dict(text_column=text_column, label_column=label_column,
                         id_column=id_column, labels=labels,
                         positional_ids=positional_ids)
  if path.is_file():
    if split != "train":
      return None
    return _read_tables(path, **parquet_options)
  if not path.is_dir():
    parts = _table_parts(path) if glob.has_magic(str(path)) else []
    if not parts:
      raise DataError(f"{path}: no such file or directory")
    return _read_tables(parts, **parquet_options) if split == "train" else None
  if (path / split).is_dir():
    return _read_tree_split(path / split, _tree_classes(labels))
  parts = _split_parts(path, split)
  if parts:
    return _read_tables(parts, **parquet_options)
  if split == "train":
    raise DataError(f"{path}: expected train/<class>/*.txt folders, "
                    "train.parquet, or Parquet, CSV or JSON Lines parts")
  return None


def _tree_classes(labels: LabelScheme) -> Tuple[str, ...]:
  try:
    return labels.tree_class_names()
  except LabelError as e:
    raise DataError(str(e)) from None


def read_evaluation_set(path, split: str = "test", **options
                        ) -> LabelledReviews:
  """What `evaluate` scores: a split of a data folder; a file, a glob, a
  folder of parts or a one-split tree (`pos/*.txt`, `neg/*.txt`) whole.
  """
  path = as_path(path)
  labels = options.get("labels", FROM_THE_DATA)
  if path.is_dir() and not labels.label_map and all(
      (path / name).is_dir() for name in _tree_classes(labels)):
    return _read_tree_split(path, _tree_classes(labels))
  if path.is_file():
    return _read_tables(path, **options)
  labelled = read_labelled(path, split, **options) if path.is_dir() else None
  if labelled is None and not path.is_dir():  # a glob: its parts whole
    parts = _table_parts(path)
    if parts:
      return _read_tables(parts, **options)
  if labelled is None and path.is_dir():
    parts = _table_parts(path)
    if parts and not any(_stem(p) in SPLIT_NAMES for p in parts):
      return _read_tables(parts, **options)  # a folder of parts, whole
  if labelled is None:
    raise DataError(f"{path}: no {split!r} split ({split}/ or "
                    f"{split}.parquet); pass a labelled file or folder, or "
                    "--split train")
  return labelled


def split_train_validation(data: LabelledReviews, *,
                           validation_fraction: float = 0.2, seed: int = 42
                           ) -> Tuple[LabelledReviews, LabelledReviews]:
  """A reproducible shuffled split: the same seed gives the same rows."""
  if not 0.0 < validation_fraction < 1.0:
    raise ValueError("validation_fraction must lie in (0, 1)")
  order = np.random.default_rng(seed).permutation(len(data))
  n_validation = int(round(len(data) * validation_fraction))
  if n_validation == 0 or n_validation == len(data):
    raise DataError(f"{len(data)} reviews are too few to split "
                    f"{validation_fraction:.0%} off for validation")
  return (data.subset(np.sort(order[n_validation:])),
          data.subset(np.sort(order[:n_validation])))


def sample(data: LabelledReviews, max_examples: Optional[int], *, seed: int
           ) -> LabelledReviews:
  """A class-mixed random subset, for quick runs (`--max-examples`)."""
  if not max_examples or max_examples >= len(data):
    return data
  order = np.random.default_rng(seed).permutation(len(data))[:max_examples]
  return data.subset(np.sort(order))


# Splits whose text pre-training may read from a data folder: the test split
# is kept for the final figure alone, so its text is never trained on.
PRETRAINING_SPLITS = ("train", "unsup")


@dataclasses.dataclass
class UnlabelledTexts:
  """Texts without labels (for pre-training), with where they came from."""
  texts: List[str]
  sources: List[dict]

  def __len__(self):
    return len(self.texts)

  def fingerprint(self) -> str:
    digest = hashlib.sha256()
    for text in self.texts:
      digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def _text_files(folder: pathlib.Path) -> List[pathlib.Path]:
  return sorted(p for p in folder.rglob("*.txt")
                if not p.name.startswith(("_", ".")))


def _texts_of_tables(parts, text_column: str) -> List[str]:
  texts = []
  for part in parts:
    table = _read_table_file(part)
    if text_column not in table.schema.names:
      raise DataError(f"{part}: no column {text_column!r} (columns: "
                      f"{table.schema.names}); name it with --text-column")
    texts.extend(table[text_column].to_pylist())
  return texts


def _pretraining_parts(path) -> Tuple[str, list]:
  """What a path given to pre-training holds: ("tables", parts) or
  ("files", .txt files); a data folder gives its train and unsup splits."""
  if path.is_file():
    return "tables", [path]
  if not path.is_dir():
    parts = _table_parts(path) if glob.has_magic(str(path)) else []
    if not parts:
      raise DataError(f"{path}: no such file or directory")
    return "tables", parts
  if isinstance(path, BeamPath):
    parts = _table_parts(path)
  elif (path / "train").is_dir():  # an aclImdb tree: train/{neg,pos,unsup}
    return "files", _text_files(path / "train")
  else:
    parts = _table_parts(path)
  if any(_stem(p) in SPLIT_NAMES for p in parts):
    parts = [p for p in parts if _stem(p) in PRETRAINING_SPLITS]
  if parts:
    return "tables", parts
  files = [] if isinstance(path, BeamPath) else _text_files(path)
  if not files:
    raise DataError(f"{path}: no Parquet, CSV or JSON Lines parts and no "
                    ".txt files")
  return "files", files


def read_texts(paths: Sequence, *, text_column: str = columns.INPUT_TEXT
               ) -> UnlabelledTexts:
  """The texts of one or more sources: files, globs, folders of parts,
  aclImdb trees (train/ only) or data folders (train and unsup, never test).
  Null and blank texts are left out and counted."""
  texts, sources = [], []
  for given in paths:
    path = as_path(given)
    kind, parts = _pretraining_parts(path)
    if kind == "tables":
      found = _texts_of_tables(parts, text_column)
    else:
      found = [p.read_bytes().decode("utf-8", errors="replace") for p in parts]
    kept = [t for t in found if isinstance(t, str) and t.strip()]
    texts.extend(kept)
    sources.append({"source": str(given), "files": len(parts),
                    "rows": len(kept), "left_out_empty": len(found) - len(kept)})
  if not texts:
    raise DataError(f"no text in {', '.join(map(str, paths))}")
  return UnlabelledTexts(texts=texts, sources=sources)


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


def _read_manifest(prefix: str) -> dict:
  import json
  from schemas import outputs
  path = as_path(outputs.manifest_path(prefix))
  if not path.is_file():
    raise DataError(f"{prefix}: no complete scoring output ({path.name} is "
                    "missing); --pseudo-labels takes the --output PREFIX of a "
                    "finished `reviewscore score` run")
  if isinstance(path, BeamPath):
    with path.open(decompress=False) as f:
      return json.loads(f.read())
  return json.loads(path.read_text())


def _check_unchanged(prefix: str, recorded: dict, parts, text_column: str
                     ) -> None:
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
    if now is None or now.size_in_bytes != state.get("size") or (
        state.get("modified") is not None and
        now.last_updated_in_seconds != state["modified"]):
      raise DataError(f"{prefix}: {part} changed since it was scored, so its "
                      "texts may not be the scored ones; score it again, or "
                      f"score with --carry-columns {text_column}")


def _texts_by_id(prefix: str, manifest: dict, wanted: List[str]) -> List[str]:
  """The texts of `wanted` ids, read back from the scoring run's own input
  (a table input: Parquet, CSV or JSON Lines), for scores that did not
  carry them."""
  names = manifest.get("columns") or {}
  text_column = names.get("text", columns.INPUT_TEXT)
  id_column = names.get("id", columns.INPUT_ID)
  source = manifest.get("input")
  if manifest.get("format") not in ("parquet", "csv", "jsonl") or not source:
    raise DataError(f"{prefix}: the scores carry no {text_column!r} column and "
                    "the run's input is not a table to read it back from; "
                    f"score with --carry-columns {text_column}")
  path = as_path(source)
  parts = [path] if path.is_file() else _table_parts(path)
  _check_unchanged(prefix, manifest.get("input_files") or {}, parts,
                   text_column)
  by_id = {}
  needed = set(wanted)
  for part in parts:
    table = _read_table_file(part)
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
  manifest: dict
  table: pa.Table  # ids, probabilities, and the texts when they were carried
  threshold: Optional[float]  # two classes: the decision threshold it served


def _teacher_run(prefix: str, class_names: Sequence[str], text_column: str
                 ) -> _TeacherRun:
  import json
  from schemas import outputs
  manifest = _read_manifest(prefix)
  parts = _table_parts(as_path(outputs.score_shards_glob(prefix)))
  tables = [_read_table_file(p) for p in parts]
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
  expected = manifest.get("counts", {}).get("scored")
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
             "teachers": [run.manifest.get("model", {}).get("fingerprint")
                          for run in runs]}
  return PseudoLabelled(ids=[ids[i] for i in keep_rows],
                        texts=[texts[i] for i in keep_rows],
                        targets=targets[keep], label_ids=kept_labels,
                        summary=summary)
