"""Reading and validating reviews, on the workers: work item → records.

Each reader turns one work item of the plan (pipeline.plan) into raw
records, streaming it in bounded chunks so that memory does not follow the
archive's size. Every record a reader meets becomes exactly one raw record,
and `Validate` sends the unusable ones to the dead letters with a reason:
no record vanishes between the input and the counts.

A raw record is a dict: id, source (the file), value (whatever the input
held: str, bytes, None, a number...), carried (dict of carried columns) and
defect (a dead-letter reason found while reading, else None).
"""
import contextlib
import itertools
from typing import Any, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline import escaped_utf8, json_lines
from pipeline import progress, records
from pipeline.dead_letters import DEAD, error_detail
from pipeline.lines import read_lines
from runtime.filesystems import relative_path
from pipeline.csv_files import CSV_READ_BLOCK_BYTES, open_csv_reader
from pipeline.plan import InputPlan
from schemas import columns as c
from schemas.inputs import TABLE_FORMATS

# Batches pyarrow decodes at a time: bounds a worker's memory per row group.
_PARQUET_BATCH_ROWS = 1024


class UnreadableFile(IOError):
  """An input file that fails part-way: a damaged or falsely named archive."""


@contextlib.contextmanager
def _naming(path: str):
  """Errors from reading `path` (a decompressor's among them, which name
  no file) fail the run naming it: its remaining records are unknown, so
  they cannot be dead-lettered one by one."""
  try:
    yield
  except Exception as e:
    raise UnreadableFile(f"{path}: cannot be read to its end "
                         f"({type(e).__name__}: {e})") from e


def _review_id(value, position: str) -> str:
  """The id column's value as a string; FILE:ROW where it is missing."""
  return position if value in (None, "") else str(value)


class _Reader(beam.DoFn):
  """Counts every record it reads: the `read` that Commit reconciles with
  scored + dead-lettered."""

  def setup(self):
    self._read = Metrics.counter("reviewscore", "read")


class _ColumnReader(_Reader):
  """A reader of files with named columns: the text, the id, the carried."""

  def __init__(self, *, root: str, text_column: str, id_column: str,
               carried: Sequence[Tuple[str, str]],
               column_types: Optional[Dict[str, pa.DataType]] = None):
    self._root = root
    self._text = text_column
    self._id = id_column
    self._carried = list(carried)  # (input column, output column)
    self._column_types = dict(column_types or {})


class ReadTable(_ColumnReader):
  """(path, row group, first row, has id) → raw records, a batch at a time.

  Parquet is read a row group at a time; CSV (any Beam compression) a whole
  file per work item, streamed in pyarrow's blocks.
  """

  def __init__(self, *, kind: str, **columns):
    super().__init__(**columns)
    self._kind = kind

  def process(self, item):
    path, group, first_row, has_id = item
    relative = relative_path(path, self._root)
    columns = [self._text] + ([self._id] if has_id else [])
    columns += [n for n, _ in self._carried if n not in columns]
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED
                          ) as f:
      rows = itertools.count(first_row)
      malformed, numbered = [], itertools.count(1)
      for batch in self._batches(path, f, group, columns, malformed.append):
        yield from self._malformed_rows(relative, path, malformed, numbered)
        texts, data, textual = self._columns(batch, columns)
        for i in range(batch.num_rows):
          self._read.inc()
          position = f"{relative}:{next(rows)}"
          values, undecodable = _decoded(
              {name: data[name][i] for name in data}, textual)
          review_id = position if self._id in undecodable else _review_id(
              values[self._id] if has_id else None, position)
          if undecodable:
            name = undecodable[0]
            yield records.raw(review_id, path, texts[i],
                       defect=c.REASON_UNDECODABLE,
                       detail=f"column {name!r} is not UTF-8: "
                       f"{values[name][:40]!r}")
            continue
          yield records.raw(review_id, path, texts[i],
                     {alias: values[n] for n, alias in self._carried})
      yield from self._malformed_rows(relative, path, malformed, numbered)

  def _columns(self, batch: pa.RecordBatch, columns: Sequence[str]):
    """(texts as bytes, {column: values}, names of the text columns whose
    values are bytes still to decode) of one batch."""
    texts = self._file_bytes(_python_values(batch.column(self._text)))
    data, textual = {}, set()
    for name in set(columns) - {self._text}:
      column = batch.column(name)
      data[name] = _python_values(column)
      if self._is_text(name, column.type):
        textual.add(name)
        data[name] = self._file_bytes(data[name])
    if self._text in dict(self._carried):  # a carried copy is a string
      data[self._text] = [v.decode("utf-8", "replace")
                          if isinstance(v, bytes) else v for v in texts]
    return texts, data, textual

  def _file_bytes(self, values: list) -> list:
    """CSV cells as the bytes the file held (see open_csv_reader)."""
    if self._kind != "csv":
      return values
    return [escaped_utf8.original(v) if isinstance(v, bytes) else v
            for v in values]

  def _is_text(self, name: str, kind: pa.DataType) -> bool:
    """Whether a column's cells are text, to be decoded from the bytes
    they are read as: the id, and columns planned or stored as strings."""
    return name == self._id or any(
        pa.types.is_string(t) or pa.types.is_large_string(t)
        for t in (self._column_types.get(name, kind), kind))

  def _malformed_rows(self, relative, path, found, numbered):
    """Dead-letter records for the CSV rows the parser skipped."""
    for bad in found:
      self._read.inc()
      yield records.raw(f"{relative}:malformed-{next(numbered)}", path,
                 escaped_utf8.original(bad.text),
                 defect=c.REASON_MALFORMED_ROW,
                 detail=f"{bad.actual_columns} fields where the header has "
                 f"{bad.expected_columns}")
    found.clear()

  def _batches(self, path, stream, group, columns, on_malformed_row):
    if self._kind == "parquet":
      yield from pq.ParquetFile(stream).iter_batches(
          batch_size=_PARQUET_BATCH_ROWS, row_groups=[group], columns=columns)
      return
    # Carried columns keep the types the launcher planned with, so every
    # file's rows agree; ids stay strings whatever they look like. Texts,
    # ids and string columns are read as bytes: a cell that is not UTF-8 is
    # dead-lettered with its row, not a parse error that fails the file.
    types = {**{name: pa.binary() if self._is_text(name, kind) else kind
                for name, kind in self._column_types.items()},
             self._text: pa.binary(), self._id: pa.binary()}
    for batch in open_csv_reader(path, stream, types,
                                 on_malformed_row=on_malformed_row,
                                 block_size=CSV_READ_BLOCK_BYTES):
      yield batch.select([n for n in columns if n in batch.schema.names])


def _python_values(column: pa.Array) -> list:
  """A column's Python values, strings as their bytes: one that is not
  valid UTF-8 is then its row's dead letter (`check_text`, `_decoded`)
  rather than failing its whole batch."""
  if pa.types.is_string(column.type):
    column = column.cast(pa.binary())
  elif pa.types.is_large_string(column.type):
    column = column.cast(pa.large_binary())
  return column.to_pylist()


def _decoded(values: Dict[str, Any], textual) -> Tuple[Dict[str, Any],
                                                       List[str]]:
  """A row's values with the bytes of its text columns decoded, and the
  names of those that are not UTF-8."""
  undecodable = []
  for name in sorted(textual):
    value = values[name]
    if isinstance(value, bytes):
      try:
        values[name] = value.decode("utf-8")
      except UnicodeDecodeError:
        undecodable.append(name)
  return values, undecodable


class ReadJsonLines(_ColumnReader):
  """(path, 0, 0, has id) → raw records, a line at a time
  (`pipeline.json_lines`): a line that is no JSON object, or whose carried
  values do not fit the planned columns, is dead-lettered on its own."""

  def __init__(self, *, max_bytes: int, **columns):
    super().__init__(**columns)
    self._max_bytes = max_bytes

  def process(self, item):
    path, _, _, has_id = item
    relative = relative_path(path, self._root)
    # AUTO: .gz, .bz2... decompressed
    with _naming(path), FileSystems.open(path) as f:
      for row, (number, value, line, reason, detail) in enumerate(
          json_lines.objects(f, max_review_bytes=self._max_bytes)):
        self._read.inc()
        positional = f"{relative}:{row}"
        if value is None:
          yield records.raw(positional, path, line, defect=reason,
                     detail=f"line {number}: {detail}")
          continue
        review_id = _review_id(value.get(self._id) if has_id else None,
                               positional)
        try:
          carried = {alias: json_lines.carried_value(
              value.get(name), self._column_types[name])
              for name, alias in self._carried}
        except ValueError as e:
          yield records.raw(review_id, path, value.get(self._text),
                     defect=c.REASON_MALFORMED_ROW,
                     detail=f"line {number}: a carried value: {e}")
          continue
        yield records.raw(review_id, path, value.get(self._text), carried)


class _FileReader(_Reader):
  """Reads the files under an input root, held to --max-review-bytes."""

  def __init__(self, *, root: str, max_bytes: int):
    self._root = root
    self._max_bytes = max_bytes


class ReadTextFile(_FileReader):
  """A text file → one raw record per line (id = relative path:line)."""

  def process(self, path: str):
    relative = relative_path(path, self._root)
    # AUTO: .gz/.bz2/... archives are decompressed as they stream.
    with _naming(path), FileSystems.open(path) as f:
      for number, line, length in read_lines(f, self._max_bytes):
        self._read.inc()
        if line is None:
          yield records.raw(f"{relative}:{number}", path, None, defect=c.REASON_TOO_LONG,
                     detail=f"{length} bytes")
        else:
          yield records.raw(f"{relative}:{number}", path, line)


class ReadReviewFile(_FileReader):
  """One file, one review (id = the file's path relative to the input root)."""

  def process(self, item: Tuple[str, int]):
    path, size = item
    review_id = relative_path(path, self._root)
    self._read.inc()
    if size > self._max_bytes:
      yield records.raw(review_id, path, None, defect=c.REASON_TOO_LONG,
                 detail=f"{size} bytes")
      return
    try:
      with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED
                            ) as f:
        data = f.read(self._max_bytes + 1)
    except Exception as e:  # one unreadable review is a bad record, not a crash
      yield records.raw(review_id, path, None, defect=c.REASON_UNREADABLE,
                 detail=error_detail(e))
      return
    if len(data) > self._max_bytes:
      yield records.raw(review_id, path, None, defect=c.REASON_TOO_LONG,
                 detail=f"more than {self._max_bytes} bytes")
    else:
      yield records.raw(review_id, path, data)


class ReadReviews(beam.PTransform):
  """The plan's files → raw records, with steps named by format."""

  def __init__(self, plan: InputPlan, *, max_bytes: int):
    super().__init__()
    self._plan = plan
    self._max_bytes = max_bytes

  def expand(self, pbegin):
    plan = self._plan
    columns = dict(root=plan.root, text_column=plan.text_column,
                   id_column=plan.id_column, carried=plan.carried,
                   column_types=plan.column_types)
    if plan.format == "jsonl":
      items, reader, label = plan.row_groups, ReadJsonLines(
          max_bytes=self._max_bytes, **columns), "ReadJsonLines"
    elif plan.format in TABLE_FORMATS:
      items, reader = plan.row_groups, ReadTable(kind=plan.format, **columns)
      label = {"parquet": "ReadParquet", "csv": "ReadCsv"}[plan.format]
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


class Validate(beam.DoFn):
  """Raw records → {id, source, text, carried}; the rest tagged DEAD."""

  def __init__(self, *, max_bytes: int, run_id: str = ""):
    self._max_bytes = max_bytes
    self._run_id = run_id

  def process(self, record):
    value = record[records.VALUE]
    progress.record_read(self._run_id, len(value) + 1 if isinstance(
        value, (str, bytes)) else 1)
    reason, detail = record[records.DEFECT], record[records.DETAIL]
    if not reason:
      text, reason, detail = check_text(record[records.VALUE], self._max_bytes)
    if reason:
      yield beam.pvalue.TaggedOutput(DEAD, records.dead(
          record, reason, detail, record[records.VALUE]))
      return
    yield records.valid(record, text)
