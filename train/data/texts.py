"""Unlabelled texts for pre-training: the train and unsup splits of a
dataset, text files, or tables with a text column."""
import dataclasses
import glob
import hashlib
import pathlib
from typing import List, Sequence, Tuple

from runtime.filesystems import BeamPath, as_path
from schemas import columns
from train.data.reviews import (SPLIT_NAMES, DataError, read_table_file,
                                split_stem, table_parts)


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
    table = read_table_file(part)
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
    parts = table_parts(path) if glob.has_magic(str(path)) else []
    if not parts:
      raise DataError(f"{path}: no such file or directory")
    return "tables", parts
  if isinstance(path, BeamPath):
    parts = table_parts(path)
  elif (path / "train").is_dir():  # an aclImdb tree: train/{neg,pos,unsup}
    return "files", _text_files(path / "train")
  else:
    parts = table_parts(path)
  if any(split_stem(p) in SPLIT_NAMES for p in parts):
    parts = [p for p in parts if split_stem(p) in PRETRAINING_SPLITS]
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
