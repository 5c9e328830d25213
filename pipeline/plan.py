"""Planning the input, on the launcher: match, check, cut into work items.

Every input is checked before the pipeline starts (a missing path, an empty
glob, an unreadable or damaged file, a missing column fail here, in one
line, rather than on a worker an hour in); then the input is cut into small
work items (a Parquet row group, a CSV, JSON Lines or text file, a review
file) that workers read in bounded chunks (pipeline.read).
"""
import dataclasses
import glob
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.csv_files import open_csv_reader
from pipeline.settings import DEFAULT_MAX_REVIEW_BYTES
from runtime.filesystems import (is_remote, join_path, missing_filesystem,
                                  relative_path, split_path)
from schemas import arrow as schema_lib
from schemas import columns as c
from schemas.manifest import FileState
from schemas.inputs import (COMPRESSION_CODECS, INPUT_FORMATS, TABLE_FORMATS,
                            table_format_of)

FORMATS = INPUT_FORMATS


class InputError(Exception):
  """An input that cannot be read at all: fail before the pipeline starts."""


def _is_dir(path: str) -> bool:
  return (not is_remote(path)) and os.path.isdir(path)


def _has_wildcard(pattern: str) -> bool:
  return bool(re.search(r"[*?[]", pattern))


def _folder_files(pattern: str
                  ) -> Optional[List[Tuple[str, int, Optional[float]]]]:
  """The files below `pattern` when it names a folder: a local folder, or
  on a bucket a name without wildcards that is no file but has files below
  it (a bucket's folders are key prefixes); None when it does not."""
  if not is_remote(pattern):
    if not os.path.isdir(pattern):
      return None
    return _match(join_path(_folder_root(pattern), "**"))
  if _has_wildcard(pattern):
    return None
  folder = _folder_root(pattern)
  if any(path == folder for path, _, _ in _match(folder)):
    return None
  return _match(join_path(folder, "**")) or None


def _folder_root(pattern: str) -> str:
  return pattern.rstrip("/\\") or "/"


def _hidden(path: str, root: str) -> bool:
  """Dot-files and dot-folders (our own staging folders among them), and
  `_`-files such as Spark's and Hadoop's `_SUCCESS` markers."""
  parts = [part for part in re.split(r"[/\\]", relative_path(path, root))
           if part not in ("", ".")]
  return (any(part.startswith(".") for part in parts)
          or bool(parts) and parts[-1].startswith("_"))


@dataclasses.dataclass
class InputPlan:
  """What to read, as the launcher found it."""
  pattern: str
  format: str
  root: str  # ids and dead letters name files relative to this
  files: List[Tuple[str, int]]  # (path, size in bytes)
  text_column: str = c.INPUT_TEXT
  id_column: str = c.INPUT_ID
  carried_fields: List[pa.Field] = dataclasses.field(default_factory=list)
  carried_sources: List[str] = dataclasses.field(default_factory=list)
  # Parquet: (path, row group, first row of the group, file has the id column)
  row_groups: List[Tuple[str, int, int, bool]] = dataclasses.field(
      default_factory=list)
  # The columns read and their types as planned (CSV and JSON Lines readers
  # are held to them).
  column_types: Dict[str, pa.DataType] = dataclasses.field(
      default_factory=dict)
  # Last modification time of each file (seconds; None where the filesystem
  # does not say): with the size, what tells a rerun that a file changed.
  modified: Dict[str, Optional[float]] = dataclasses.field(default_factory=dict)
  # Parquet: each file's row count, from its footer.
  rows: Dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def carried_names(self) -> List[str]:
    return [f.name for f in self.carried_fields]

  @property
  def carried(self) -> List[Tuple[str, str]]:
    """(input column, output column) pairs."""
    return list(zip(self.carried_sources, self.carried_names, strict=True))

  def describe(self) -> str:
    units = (f", {len(self.row_groups)} row groups"
             if self.format == "parquet" else "")
    return f"{len(self.files)} {self.format} file(s){units} from {self.pattern}"

  def file_states(self) -> Dict[str, FileState]:
    """The size and modification time of every planned file, by its path as
    matched (as the scores' and dead letters' source_file name it)."""
    return {path: FileState(size=size, modified=self.modified.get(path))
            for path, size in self.files}

  def restricted_to(self, paths) -> "InputPlan":
    """The same plan over the files in `paths` only."""
    keep = set(paths)
    return dataclasses.replace(
        self, files=[f for f in self.files if f[0] in keep],
        row_groups=[g for g in self.row_groups if g[0] in keep],
        modified={p: t for p, t in self.modified.items() if p in keep},
        rows={p: n for p, n in self.rows.items() if p in keep})

  def expected_reviews(self) -> Optional[int]:
    """The number of input records, where known before reading: Parquet
    footers, or one review per file."""
    if self.format == "parquet":
      return sum(self.rows.values())
    if self.format == "files":
      return len(self.files)
    return None

  def uncompressed_bytes(self) -> Optional[int]:
    """The input's size where its files are not compressed (a review
    count can then be estimated from the bytes read)."""
    if any(os.path.splitext(path.lower())[1] in COMPRESSION_CODECS
           for path, _ in self.files):
      return None
    return sum(size for _, size in self.files)


def _match(pattern: str) -> List[Tuple[str, int, Optional[float]]]:
  try:
    found = FileSystems.match([pattern])[0].metadata_list
  except Exception as e:  # BeamIOError wraps the filesystem's reason
    raise InputError(f"{pattern}: cannot list input ({e})") from None
  return sorted((m.path, m.size_in_bytes,
                 getattr(m, "last_updated_in_seconds", None)) for m in found)


def _pattern_root(pattern: str) -> str:
  """The folder before the first wildcard: ids are relative to it."""
  fixed = re.match(r"^[^[*?]*", pattern).group(0)
  if fixed == pattern:  # no wildcard: a single file
    return split_path(pattern)[0]
  return fixed if fixed.endswith(("/", os.sep)) else split_path(fixed)[0]


def _check_local_entries(pattern: str, root: str, is_dir: bool) -> None:
  """Names what a local glob matches but cannot be read.

  Beam's match lists readable files only, so a broken link, a FIFO or a file
  without read permission would otherwise drop out of the input unnoticed.
  """
  if is_remote(pattern):
    return
  entries = glob.glob(join_path(root, "**") if is_dir else pattern,
                      recursive=is_dir)
  for entry in sorted(entries):
    if _hidden(entry, root) or os.path.isdir(entry):
      continue
    if os.path.islink(entry) and not os.path.exists(entry):
      raise InputError(f"{entry}: cannot read the file (a broken symbolic link)")
    if not os.path.isfile(entry):
      raise InputError(f"{entry}: cannot read the file (not a regular file)")
    if not os.access(entry, os.R_OK):
      raise InputError(f"{entry}: cannot read the file (permission denied)")


def plan_input(pattern: str, *, format: str = "auto",
               text_column: str = c.INPUT_TEXT, id_column: str = c.INPUT_ID,
               carry: Sequence[str] = (), positional_ids: bool = False,
               max_review_bytes: int = DEFAULT_MAX_REVIEW_BYTES) -> InputPlan:
  """Matches the input and checks it can be read; raises InputError.

  `carry` names Parquet columns to copy to the output, `NAME` or
  `NAME:OUTPUT_NAME` (e.g. `label:true_label`, as `label` is an output column).
  `max_review_bytes`: the run's limit, which also bounds the JSON Lines
  read to sample their columns.
  """
  if format not in FORMATS + ("auto",):
    raise InputError(f"unknown format {format!r}")
  unreachable = missing_filesystem(pattern)
  if unreachable:
    raise InputError(unreachable)
  files = _folder_files(pattern)
  is_dir = files is not None
  if is_dir:
    root = _folder_root(pattern)
  else:
    root = _pattern_root(pattern)
    files = _match(pattern)
    if not files and not _has_wildcard(pattern):
      raise InputError(f"{pattern}: no such file or directory")
  modified = {p: t for p, _, t in files}
  # A file named on its own is read even if its name marks it hidden.
  named = not is_dir and not _has_wildcard(pattern)
  # Keys ending in "/" are a bucket console's empty folder markers.
  files = [(p, size) for p, size, _ in files
           if (named or not _hidden(p, root)) and not _is_dir(p)
           and not p.endswith("/")]
  _check_local_entries(pattern, root, is_dir)
  if not files:
    raise InputError(f"{pattern}: no input files match")
  if format == "auto":
    kinds = {table_format_of(p) for p, _ in files}
    if len(kinds) == 1 and None not in kinds:
      format = kinds.pop()
    elif kinds - {None}:
      found = ", ".join(sorted(k or "other" for k in kinds))
      raise InputError(f"{pattern}: files of mixed kinds ({found}); match one "
                       "kind, or name it with --format")
    else:
      format = "files" if is_dir else "text"
  if format in ("csv", "jsonl"):
    # An empty part holds no records and no header to plan from (Spark and
    # Hive write one for each empty partition).
    files = [(p, size) for p, size in files if size != 0]
    if not files:
      raise InputError(f"{pattern}: every file it matches is empty")
  plan = InputPlan(pattern=pattern, format=format, root=root, files=files,
                   text_column=text_column, id_column=id_column,
                   modified={p: modified[p] for p, _ in files})
  if format in TABLE_FORMATS:
    _plan_table(plan, carry, positional_ids=positional_ids,
                max_review_bytes=max_review_bytes)
  else:
    if carry:
      raise InputError("--carry-columns applies to Parquet, CSV and JSON "
                       "Lines input only")
    for path, _ in files:
      if not is_remote(path) and not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot read the file (permission denied)")
  return plan


def _table_schema(path: str, kind: str, max_review_bytes: int
                  ) -> Tuple[pa.Schema, List[int]]:
  """(schema, row counts of its row groups; one unknown-size unit else)."""
  if kind == "jsonl":
    return _json_lines_schema(path, max_review_bytes), [0]
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED
                        ) as f:
    if kind == "parquet":
      metadata = pq.ParquetFile(f).metadata
      return metadata.schema.to_arrow_schema(), [
          metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    return open_csv_reader(path, f).schema, [0]


def _json_lines_schema(path: str, max_review_bytes: int) -> pa.Schema:
  from pipeline.json_lines import sample_schema
  with FileSystems.open(path) as f:  # AUTO: .gz, .bz2... decompressed
    schema = sample_schema(f, max_review_bytes=max_review_bytes)
  if not schema.names:
    raise ValueError("no JSON object in its first lines")
  return schema


def _plan_table(plan: InputPlan, carry: Sequence[str], *,
                positional_ids: bool, max_review_bytes: int) -> None:
  """Reads every footer or header: a damaged file fails the run here, not
  on a worker."""
  carried: Dict[str, pa.Field] = {}
  pairs = [tuple(n.split(":", 1)) if ":" in n else (n, n) for n in carry]
  for position, what in ((0, "column"), (1, "output name")):
    names = [pair[position] for pair in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
      raise InputError(f"--carry-columns: the {what} {twice[0]!r} is named "
                       "twice")
  describe = {"parquet": "Parquet", "csv": "CSV", "jsonl": "JSON Lines"}[
      plan.format]
  for path, _ in plan.files:
    try:
      schema, group_rows = _table_schema(path, plan.format, max_review_bytes)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError...
      raise InputError(f"{path}: not a readable {describe} file ({e})") from None
    names = set(schema.names)
    if plan.text_column not in names:
      raise InputError(
          f"{path}: no text column {plan.text_column!r} (columns: "
          f"{', '.join(schema.names)}); name it with --text-column")
    if plan.id_column not in names and not positional_ids:
      raise InputError(
          f"{path}: no id column {plan.id_column!r} (columns: "
          f"{', '.join(schema.names)}); name it with --id-column, or pass "
          "--positional-ids to number rows FILE:ROW")
    for name, _ in pairs:
      if name not in names:
        raise InputError(f"{path}: no column {name!r} to carry through")
      field = schema.field(name)
      known = carried.setdefault(name, field.with_nullable(True))
      if not known.type.equals(field.type):
        raise InputError(f"{path}: column {name!r} is {field.type}, but "
                         f"{known.type} in other files")
    for name in [plan.text_column, plan.id_column] + [n for n, _ in pairs]:
      if name in names:
        plan.column_types.setdefault(name, schema.field(name).type)
    first = 0
    for group, rows in enumerate(group_rows):
      plan.row_groups.append((path, group, first, plan.id_column in names))
      first += rows
    if plan.format == "parquet":
      plan.rows[path] = first
  plan.carried_sources = [name for name, _ in pairs]
  plan.carried_fields = [carried[name].with_name(alias) for name, alias in pairs]
  try:
    schema_lib.scored_schema(plan.carried_fields)
  except ValueError as e:  # a carried column named like an output column
    raise InputError(f"--carry-columns: {e} (rename it: NAME:NEW_NAME)"
                     ) from None
