"""The input formats users bring, told apart by file name (train and score
read the same ones)."""
import os
from typing import Optional

# Column-oriented inputs: a text column, an id column, other columns.
TABLE_FORMATS = ("parquet", "csv", "jsonl")
# Every input format of `score`: tables, text lines, one review per file.
INPUT_FORMATS = TABLE_FORMATS + ("text", "files")
# File name endings (before any compression suffix) of each table format.
TABLE_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl",
                  ".ndjson": "jsonl", ".json": "jsonl"}
# Compressed table files by suffix, with the codec that reads them.
COMPRESSION_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
COMPRESSION_SUFFIXES = tuple(COMPRESSION_CODECS)


def table_format_of(path: str) -> Optional[str]:
  """parquet, csv or jsonl from the file name (compressed too), else None."""
  name = os.path.basename(str(path).rstrip("/")).lower()
  for suffix in COMPRESSION_SUFFIXES:
    if name.endswith(suffix):
      name = name[:-len(suffix)]
      break
  return TABLE_SUFFIXES.get(os.path.splitext(name)[1])
