"""Reading review archives and writing scored Parquet shards.

Readers (Parquet, line-delimited text, one-review-per-file trees) stream:
the launcher plans small work items (a Parquet row group, a text file, a
review file) after checking every input can be opened at all; workers then
read each item in bounded chunks, so memory does not follow the archive's
size. Every record a reader meets becomes exactly one raw record; `Validate`
sends the unusable ones to the dead letters with a reason.

Writers stage shards under a hidden per-run folder beside the output and
`Commit` moves them into place and writes `PREFIX-manifest.json` last, so a
run that fails or is killed leaves no set of shards that looks complete.
"""
import dataclasses
import datetime
import glob
import json
import logging
import os
import posixpath
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas import arrow as schema_lib
from pipeline.filesystems import missing_filesystem
from schemas import columns as c
from schemas.inputs import INPUT_FORMATS, TABLE_FORMATS, table_format_of

FORMATS = INPUT_FORMATS
DEAD = "dead"
PREVIEW_CHARS = 200
DEFAULT_MAX_REVIEW_BYTES = 1_000_000
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
# Batches pyarrow decodes at a time: bounds a worker's memory per row group.
_PARQUET_BATCH_ROWS = 1024
_TEXT_CHUNK_BYTES = 1 << 16


class InputError(Exception):
  """An input that cannot be read at all: fail before the pipeline starts."""


# --------------------------------------------------------------------------
# Planning (launcher side): match, check, cut into work items.


def _is_remote(path: str) -> bool:
  return "://" in path


def _join(*parts: str) -> str:
  return posixpath.join(*parts) if _is_remote(parts[0]) else os.path.join(*parts)


def _dirname(path: str) -> str:
  return posixpath.dirname(path) if _is_remote(path) else os.path.dirname(path)


def _basename(path: str) -> str:
  return posixpath.basename(path) if _is_remote(path) else os.path.basename(path)


def _is_dir(path: str) -> bool:
  return (not _is_remote(path)) and os.path.isdir(path)


def _relative(path: str, root: str) -> str:
  if not root:
    return path
  if _is_remote(path):
    return path[len(root):].lstrip("/") if path.startswith(root) else path
  return os.path.relpath(path, root)


def _hidden(path: str, root: str) -> bool:
  """Dot-files and dot-folders (our own staging folders among them), and
  `_`-files such as Spark's and Hadoop's `_SUCCESS` markers."""
  parts = [part for part in re.split(r"[/\\]", _relative(path, root))
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


def _match(pattern: str) -> List[Tuple[str, int]]:
  try:
    found = FileSystems.match([pattern])[0].metadata_list
  except Exception as e:  # BeamIOError wraps the filesystem's reason
    raise InputError(f"{pattern}: cannot list input ({e})") from None
  return sorted((m.path, m.size_in_bytes) for m in found)


def _pattern_root(pattern: str) -> str:
  """The folder before the first wildcard: ids are relative to it."""
  fixed = re.match(r"^[^[*?]*", pattern).group(0)
  if fixed == pattern:  # no wildcard: a single file
    return _dirname(pattern)
  return fixed if fixed.endswith(("/", os.sep)) else _dirname(fixed)


def _check_local_entries(pattern: str, root: str, is_dir: bool) -> None:
  """Names what a local glob matches but cannot be read.

  Beam's match lists readable files only, so a broken link, a FIFO or a file
  without read permission would otherwise drop out of the input unnoticed.
  """
  if _is_remote(pattern):
    return
  entries = glob.glob(_join(root, "**") if is_dir else pattern,
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
               carry: Sequence[str] = (), positional_ids: bool = False
               ) -> InputPlan:
  """Matches the input and checks it can be read; raises InputError.

  `carry` names Parquet columns to copy to the output, `NAME` or
  `NAME:OUTPUT_NAME` (e.g. `label:true_label`, as `label` is an output column).
  """
  if format not in FORMATS + ("auto",):
    raise InputError(f"unknown format {format!r}")
  unreachable = missing_filesystem(pattern)
  if unreachable:
    raise InputError(unreachable)
  is_dir = _is_dir(pattern)
  if is_dir:
    root = pattern.rstrip("/\\") or "/"
    files = _match(_join(root, "**"))
  else:
    root = _pattern_root(pattern)
    files = _match(pattern)
    if not files and not re.search(r"[*?[]", pattern):
      raise InputError(f"{pattern}: no such file or directory")
  files = [(p, size) for p, size in files
           if not _hidden(p, root) and not _is_dir(p)]
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
  plan = InputPlan(pattern=pattern, format=format, root=root, files=files,
                   text_column=text_column, id_column=id_column)
  if format in TABLE_FORMATS:
    _plan_table(plan, carry, positional_ids=positional_ids)
  else:
    if carry:
      raise InputError("--carry-columns applies to Parquet, CSV and JSON "
                       "Lines input only")
    for path, _ in files:
      if not _is_remote(path) and not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot read the file (permission denied)")
  return plan


_PYARROW_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}


def _open_table_reader(path: str, stream, kind: str, column_types=None):
  """A pyarrow streaming reader over CSV or JSON Lines (its own parsers and
  decompression), on a stream opened with Beam's FileSystems."""
  import pyarrow.csv as pcsv
  import pyarrow.json as pjson
  codec = _PYARROW_CODECS.get(os.path.splitext(path.lower())[1])
  stream = pa.PythonFile(stream, mode="r")
  if codec:
    stream = pa.CompressedInputStream(stream, codec)
  if kind == "csv":
    # Reviews hold newlines inside quotes; empty cells are nulls (an empty id
    # then falls back to FILE:ROW, an empty text is dead-lettered).
    return pcsv.open_csv(
        stream, parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types=column_types or {},
                                            strings_can_be_null=True))
  if not column_types:  # planning: infer from the first block
    return pjson.open_json(stream)
  # Reading: only the planned columns, with their planned types, so that a
  # field we do not read changing type later in the file cannot fail it.
  return pjson.open_json(stream, parse_options=pjson.ParseOptions(
      explicit_schema=pa.schema(list(column_types.items())),
      unexpected_field_behavior="ignore"))


def _table_schema(path: str, kind: str) -> Tuple[pa.Schema, List[int]]:
  """(schema, row counts of its row groups; one unknown-size unit else)."""
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED
                        ) as f:
    if kind == "parquet":
      metadata = pq.ParquetFile(f).metadata
      return metadata.schema.to_arrow_schema(), [
          metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    return _open_table_reader(path, f, kind).schema, [0]


def _plan_table(plan: InputPlan, carry: Sequence[str], *,
                positional_ids: bool = False) -> None:
  """Reads every footer or header: a damaged file fails the run here, not
  on a worker."""
  carried: Dict[str, pa.Field] = {}
  pairs = [tuple(n.split(":", 1)) if ":" in n else (n, n) for n in carry]
  describe = {"parquet": "Parquet", "csv": "CSV", "jsonl": "JSON Lines"}[
      plan.format]
  for path, _ in plan.files:
    try:
      schema, group_rows = _table_schema(path, plan.format)
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
  plan.carried_sources = [name for name, _ in pairs]
  plan.carried_fields = [carried[name].with_name(alias) for name, alias in pairs]
  try:
    schema_lib.scored_schema(plan.carried_fields)
  except ValueError as e:  # a carried column named like an output column
    raise InputError(f"--carry-columns: {e} (rename it: NAME:NEW_NAME)"
                     ) from None


# --------------------------------------------------------------------------
# Reading (worker side): work item → raw records.
#
# A raw record is a dict: id, source (the file), value (whatever the input
# held: str, bytes, None, a number...), carried (dict of carried columns) and
# defect (a dead-letter reason found while reading, else None).


def _raw(review_id, source, value, carried=None, defect=None, detail=None):
  return {"id": review_id, "source": source, "value": value,
          "carried": carried or {}, "defect": defect, "detail": detail}


class ReadTable(beam.DoFn):
  """(path, row group, first row, has id) → raw records, a batch at a time.

  Parquet is read a row group at a time; CSV and JSON Lines (any Beam
  compression) a whole file per work item, streamed in pyarrow's blocks.
  """

  def __init__(self, *, kind: str, root: str, text_column: str,
               id_column: str, carried: Sequence[Tuple[str, str]],
               column_types: Optional[Dict[str, pa.DataType]] = None):
    self._kind = kind
    self._column_types = dict(column_types or {})
    self._root = root
    self._text = text_column
    self._id = id_column
    self._carried = list(carried)  # (input column, output column)

  def setup(self):
    self._read = Metrics.counter("reviewscore", "read")

  def process(self, item):
    path, group, first_row, has_id = item
    relative = _relative(path, self._root)
    columns = [self._text] + ([self._id] if has_id else [])
    columns += [n for n, _ in self._carried if n not in columns]
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED
                          ) as f:
      row = first_row
      for batch in self._batches(path, f, group, columns):
        data = {name: batch.column(name).to_pylist() for name in set(columns)}
        for i in range(batch.num_rows):
          review_id = data[self._id][i] if has_id else None
          review_id = (f"{relative}:{row}" if review_id is None
                       else str(review_id))
          self._read.inc()
          yield _raw(review_id, path, data[self._text][i],
                     {alias: data[n][i] for n, alias in self._carried})
          row += 1

  def _batches(self, path, stream, group, columns):
    if self._kind == "parquet":
      yield from pq.ParquetFile(stream).iter_batches(
          batch_size=_PARQUET_BATCH_ROWS, row_groups=[group], columns=columns)
      return
    # Carried columns keep the types the launcher planned with, so every
    # file's rows agree; in CSV, text and ids stay strings whatever they
    # look like (JSON values carry their own types).
    types = dict(self._column_types)
    if self._kind == "csv":
      types.update({self._text: pa.string(), self._id: pa.string()})
    for batch in _open_table_reader(path, stream, self._kind, types):
      yield batch.select([n for n in columns if n in batch.schema.names])


def read_lines(stream, max_bytes: int) -> Iterator[Tuple[int, Optional[bytes],
                                                         int]]:
  """Yields (line number, bytes or None when too long, byte length).

  Reads fixed-size chunks, so one 5 GB line costs no more memory than
  --max-review-bytes: its bytes are counted and dropped.
  """
  number, pending, pending_len, overflow = 1, [], 0, False

  def finish():
    if overflow:
      return number, None, pending_len
    line = b"".join(pending)
    return number, line[:-1] if line.endswith(b"\r") else line, pending_len

  while True:
    chunk = stream.read(_TEXT_CHUNK_BYTES)
    if not chunk:
      break
    start = 0
    while True:
      end = chunk.find(b"\n", start)
      piece = chunk[start:] if end < 0 else chunk[start:end]
      pending_len += len(piece)
      if not overflow:
        if pending_len > max_bytes + 1:  # +1: a trailing \r is not text
          overflow, pending = True, []
        else:
          pending.append(piece)
      if end < 0:
        break
      yield finish()
      number, pending, pending_len, overflow = number + 1, [], 0, False
      start = end + 1
  if pending_len:
    yield finish()


class ReadTextFile(beam.DoFn):
  """A text file → one raw record per line (id = relative path:line)."""

  def __init__(self, *, root: str, max_bytes: int):
    self._root = root
    self._max_bytes = max_bytes

  def setup(self):
    self._read = Metrics.counter("reviewscore", "read")

  def process(self, path: str):
    relative = _relative(path, self._root)
    # AUTO: .gz/.bz2/... archives are decompressed as they stream.
    with FileSystems.open(path) as f:
      for number, line, length in read_lines(f, self._max_bytes):
        self._read.inc()
        if line is None:
          yield _raw(f"{relative}:{number}", path, None, defect=c.REASON_TOO_LONG,
                     detail=f"{length} bytes")
        else:
          yield _raw(f"{relative}:{number}", path, line)


class ReadReviewFile(beam.DoFn):
  """One file, one review (id = the file's path relative to the input root)."""

  def __init__(self, *, root: str, max_bytes: int):
    self._root = root
    self._max_bytes = max_bytes

  def setup(self):
    self._read = Metrics.counter("reviewscore", "read")

  def process(self, item: Tuple[str, int]):
    path, size = item
    review_id = _relative(path, self._root)
    self._read.inc()
    if size > self._max_bytes:
      yield _raw(review_id, path, None, defect=c.REASON_TOO_LONG,
                 detail=f"{size} bytes")
      return
    try:
      with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED
                            ) as f:
        data = f.read(self._max_bytes + 1)
    except Exception as e:  # one unreadable review is a bad record, not a crash
      yield _raw(review_id, path, None, defect=c.REASON_UNREADABLE,
                 detail=f"{type(e).__name__}: {e}")
      return
    if len(data) > self._max_bytes:
      yield _raw(review_id, path, None, defect=c.REASON_TOO_LONG,
                 detail=f"more than {self._max_bytes} bytes")
    else:
      yield _raw(review_id, path, data)


class ReadReviews(beam.PTransform):
  """The plan's files → raw records, with steps named by format."""

  def __init__(self, plan: InputPlan, *, max_bytes: int):
    super().__init__()
    self._plan = plan
    self._max_bytes = max_bytes

  def expand(self, pbegin):
    plan = self._plan
    if plan.format in TABLE_FORMATS:
      items, reader = plan.row_groups, ReadTable(
          kind=plan.format, root=plan.root, text_column=plan.text_column,
          id_column=plan.id_column, carried=plan.carried,
          column_types=plan.column_types)
      label = {"parquet": "ReadParquet", "csv": "ReadCsv",
               "jsonl": "ReadJsonLines"}[plan.format]
    elif plan.format == "text":
      items, reader, label = [p for p, _ in plan.files], ReadTextFile(
          root=plan.root, max_bytes=self._max_bytes), "ReadText"
    else:
      items, reader, label = plan.files, ReadReviewFile(
          root=plan.root, max_bytes=self._max_bytes), "ReadFiles"
    # Create reshuffles: files / row groups spread over workers.
    return (pbegin
            | "WorkItems" >> beam.Create(items)
            | label >> beam.ParDo(reader))


# --------------------------------------------------------------------------
# Validation: raw records → review records or dead letters.


def _preview(value) -> Optional[str]:
  if value is None:
    return None
  if isinstance(value, bytes):
    value = value[:PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
  elif not isinstance(value, str):
    value = repr(value)
  return value[:PREVIEW_CHARS]


def check_text(value, max_bytes: int) -> Tuple[Optional[str], Optional[str],
                                                Optional[str]]:
  """(text, None, None) for a usable review, else (None, reason, detail)."""
  if value is None:
    return None, c.REASON_NULL_TEXT, None
  if isinstance(value, (bytes, bytearray)):
    if len(value) > max_bytes:
      return None, c.REASON_TOO_LONG, f"{len(value)} bytes"
    try:
      value = bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
      return None, c.REASON_UNDECODABLE, str(e)
  elif not isinstance(value, str):
    return None, c.REASON_NOT_A_STRING, type(value).__name__
  # Characters are at least a byte each in UTF-8: encode only when in doubt.
  if len(value) > max_bytes or (len(value) * 4 > max_bytes and
                                len(value.encode("utf-8", "surrogatepass"))
                                > max_bytes):
    return None, c.REASON_TOO_LONG, f"{len(value.encode('utf-8', 'surrogatepass'))} bytes"
  if "\x00" in value:
    return None, c.REASON_BINARY, "NUL characters in the text"
  if not value.strip():
    return None, c.REASON_EMPTY_TEXT, None
  return value, None, None


def dead_letter(record: Dict[str, Any], reason: str, detail=None,
                value=None) -> Dict[str, Any]:
  return {"id": record.get("id"), "source": record.get("source"),
          "reason": reason, "detail": detail, "value": value}


class Validate(beam.DoFn):
  """Raw records → {id, source, text, carried}; the rest tagged DEAD."""

  def __init__(self, *, max_bytes: int):
    self._max_bytes = max_bytes

  def process(self, record):
    if record["defect"]:
      yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
          record, record["defect"], record["detail"], record["value"]))
      return
    text, reason, detail = check_text(record["value"], self._max_bytes)
    if reason:
      yield beam.pvalue.TaggedOutput(DEAD, dead_letter(
          record, reason, detail, record["value"]))
      return
    yield {"id": record["id"], "source": record["source"], "text": text,
           "carried": record["carried"]}


class FormatDeadLetter(beam.DoFn):
  """Dead letters → rows of schemas.dead_letter_schema(), counted by reason."""

  def setup(self):
    self._total = Metrics.counter("reviewscore", "dead_lettered")
    self._by_reason = {}

  def process(self, letter):
    reason = letter["reason"]
    if reason not in self._by_reason:
      self._by_reason[reason] = Metrics.counter("reviewscore",
                                                f"dead_lettered.{reason}")
    self._total.inc()
    self._by_reason[reason].inc()
    detail = letter.get("detail")
    yield {c.REVIEW_ID: None if letter["id"] is None else str(letter["id"]),
           c.SOURCE_FILE: letter["source"], c.ERROR_REASON: reason,
           c.ERROR_DETAIL: None if detail is None else str(detail)[:1000],
           c.ERROR_TEXT_PREVIEW: _preview(letter.get("value"))}


# --------------------------------------------------------------------------
# Writing: staged shards, then a commit that makes them visible.


@dataclasses.dataclass(frozen=True)
class OutputPaths:
  """Where a run writes: final names, and the hidden staging folder."""
  prefix: str
  run_id: str

  @property
  def staging_dir(self) -> str:
    return _join(_dirname(self.prefix) or ".",
                 f".{_basename(self.prefix)}.staging-{self.run_id}")

  @property
  def staged_scores(self) -> str:
    return _join(self.staging_dir, _basename(self.prefix))

  # Dead letters live in a folder, PREFIX-errors/part-SSSSS-of-NNNNN.parquet,
  # so that analytics' `read_parquet('PREFIX-*.parquet')` matches the score
  # shards only (a glob's * does not cross a path separator).
  @property
  def errors_dir(self) -> str:
    return self.prefix + "-errors"

  @property
  def staged_errors(self) -> str:
    return _join(self.staging_dir, "errors", "part")

  @property
  def manifest(self) -> str:
    return self.prefix + "-manifest.json"

  def final_name(self, staged_path: str) -> str:
    if _dirname(staged_path) == _dirname(self.staged_errors):
      return _join(self.errors_dir, _basename(staged_path))
    return _join(_dirname(self.prefix) or ".", _basename(staged_path))

  def final_globs(self) -> List[str]:
    shard = "-?????-of-?????.parquet"
    return [self.prefix + shard, _join(self.errors_dir, "part") + shard]


def write_shards(pcoll, prefix: str, schema: pa.Schema, num_shards: int,
                 label: str):
  """Parquet shards PREFIX-SSSSS-of-NNNNN.parquet; returns their names."""
  return pcoll | label >> beam.io.WriteToParquet(
      prefix, schema, file_name_suffix=".parquet", num_shards=num_shards,
      shard_name_template=SHARD_TEMPLATE, codec="snappy")


def _delete(paths: Sequence[str]) -> None:
  existing = [p for p in paths if FileSystems.exists(p)]
  if existing:
    FileSystems.delete(existing)


class Commit(beam.DoFn):
  """Moves the staged shards into place and writes the manifest last.

  Runs once, after both writes have finished (their file names are side
  inputs). Refuses to commit when the counts do not reconcile, so a run that
  lost records never produces complete-looking output. Idempotent: a retried
  commit finds its shards already moved.
  """

  def __init__(self, paths: OutputPaths, manifest: Dict[str, Any]):
    self._paths = paths
    self._manifest = manifest

  def process(self, _, score_files, error_files, read, scored, dead, reasons,
              precisions):
    paths = self._paths
    if read != scored + dead:
      raise RuntimeError(
          f"counts do not reconcile: read {read} != scored {scored} + "
          f"dead-lettered {dead}; nothing committed (staged in "
          f"{paths.staging_dir})")
    staged = sorted(score_files) + sorted(error_files)
    finals = [paths.final_name(p) for p in staged]
    # An older manifest must not vouch for a mix of old and new shards.
    _delete([paths.manifest])
    stale = []
    for pattern in paths.final_globs():
      stale += [m.path for m in FileSystems.match([pattern])[0].metadata_list
                if m.path not in finals]
    _delete(stale)
    moves = [(s, f) for s, f in zip(staged, finals, strict=True) if FileSystems.exists(s)]
    if error_files and not FileSystems.exists(paths.errors_dir):
      FileSystems.mkdirs(paths.errors_dir)
    if moves:
      FileSystems.rename([s for s, _ in moves], [f for _, f in moves])
    manifest = json.loads(json.dumps(self._manifest))
    manifest["model"]["precision"]["used"] = sorted(precisions)
    manifest.update({
        "completed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "counts": {"read": read, "scored": scored, "dead_lettered": dead,
                   "dead_lettered_by_reason": dict(sorted(reasons.items()))},
        "scores": [paths.final_name(p) for p in sorted(score_files)],
        "errors": [paths.final_name(p) for p in sorted(error_files)],
    })
    tmp = paths.manifest + ".tmp"
    with FileSystems.create(tmp) as f:
      f.write(json.dumps(manifest, indent=2).encode())
    FileSystems.rename([tmp], [paths.manifest])
    try:
      staging = paths.staging_dir
      _delete([staging + "/" if _is_remote(staging) else staging])
    except Exception as e:  # leftovers are hidden and harmless
      logging.warning("could not remove %s: %s", paths.staging_dir, e)
    yield manifest


def read_manifest(paths: OutputPaths) -> Optional[Dict[str, Any]]:
  if not FileSystems.exists(paths.manifest):
    return None
  with FileSystems.open(paths.manifest,
                        compression_type=CompressionTypes.UNCOMPRESSED) as f:
    return json.loads(f.read().decode())
