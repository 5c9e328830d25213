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
from train.data.labels import LabelError, LabelScheme

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


def read_table_file(path: pathlib.Path) -> pa.Table:
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


def table_parts(path: pathlib.Path) -> List[pathlib.Path]:
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


def split_stem(path: pathlib.Path) -> str:
  """`test` for test.parquet, test.csv.gz, test.jsonl..."""
  name = path.name
  while "." in name:
    name = name.rsplit(".", 1)[0]
  return name


def split_parts(path: pathlib.Path, split: str) -> Optional[List[pathlib.Path]]:
  """A folder's parts for `split`: the files named after it when any part is
  named after a split (train.parquet, test.csv.gz...), else all its parts
  for `train` (a folder of parts is one labelled set), else None."""
  parts = table_parts(path)
  if any(split_stem(p) in SPLIT_NAMES for p in parts):
    named = [p for p in parts if split_stem(p) == split]
    return named or None
  return parts if split == "train" and parts else None


def text_values(column: pa.ChunkedArray, part) -> pa.ChunkedArray:
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
    table = read_table_file(part)
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
                            "text": text_values(table[text_column], part),
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
    parts = table_parts(path) if glob.has_magic(str(path)) else []
    if not parts:
      raise DataError(f"{path}: no such file or directory")
    return _read_tables(parts, **parquet_options) if split == "train" else None
  if (path / split).is_dir():
    return _read_tree_split(path / split, _tree_classes(labels))
  parts = split_parts(path, split)
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
    parts = table_parts(path)
    if parts:
      return _read_tables(parts, **options)
  if labelled is None and path.is_dir():
    parts = table_parts(path)
    if parts and not any(split_stem(p) in SPLIT_NAMES for p in parts):
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


def training_splits(labelled: LabelledReviews, *, max_examples: Optional[int],
                    validation_fraction: float, seed: int
                    ) -> Tuple[LabelledReviews, LabelledReviews,
                               LabelledReviews]:
  """(train, validation, unused) of a labelled split, as training chooses
  them: `max_examples` sampled and split; the rest, never trained on, in a
  seeded order (empty where every review was sampled). The one way both
  training and `optimize` rebuild a model's splits."""
  sampled = sample(labelled, max_examples, seed=seed)
  train, validation = split_train_validation(
      sampled, validation_fraction=validation_fraction, seed=seed)
  rest = np.arange(0)
  if max_examples and max_examples < len(labelled):
    rest = np.random.default_rng(seed).permutation(len(labelled))[max_examples:]
  return train, validation, labelled.subset(rest)


# Splits whose text pre-training may read from a data folder: the test split
# is kept for the final figure alone, so its text is never trained on.
