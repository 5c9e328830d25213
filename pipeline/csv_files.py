"""Reading CSV files: one reader for the launcher's planning and the
workers' reading, so a file the launcher accepted parses the same way."""
import os

import pyarrow as pa

from schemas.inputs import COMPRESSION_CODECS

# pyarrow parses CSV in blocks and fails on a row that does not fit in one:
# a worker's block holds several reviews of the default --max-review-bytes
# (those longer are dead-lettered as too_long). Planning reads headers with
# pyarrow's default, as it reads ahead several blocks.
CSV_READ_BLOCK_BYTES = 4 << 20


def open_csv_reader(path: str, stream, column_types=None, *,
                    on_malformed_row=None, block_size=None):
  """A pyarrow streaming reader over CSV (its own parser and
  decompression), on a stream opened with Beam's FileSystems.

  Planning reads headers with it and workers read rows with it, so a file
  the launcher accepted parses the same way on the workers. A CSV row with
  the wrong number of fields is skipped, after `on_malformed_row(row)`
  (pyarrow's InvalidRow) has seen it. Bytes that are not UTF-8 reach cells
  and rows escaped (`pipeline.escaped_utf8.original` restores them), so no
  such byte fails the file.
  """
  import pyarrow.csv as pcsv
  from pipeline import escaped_utf8
  escaped_utf8.register()
  codec = COMPRESSION_CODECS.get(os.path.splitext(path.lower())[1])
  stream = pa.PythonFile(stream, mode="r")
  if codec:
    stream = pa.CompressedInputStream(stream, codec)

  def malformed(row):
    if on_malformed_row is not None:
      on_malformed_row(row)
    return "skip"
  # Reviews hold newlines inside quotes. Text and string cells are never
  # null, so a review or an id that reads "NA" or "null" stays itself (an
  # empty id falls back to FILE:ROW, an empty text is dead-lettered);
  # numeric columns keep pyarrow's null markers.
  return pcsv.open_csv(
      stream, read_options=pcsv.ReadOptions(
          encoding=escaped_utf8.ENCODING,
          **({"block_size": block_size} if block_size else {})),
      parse_options=pcsv.ParseOptions(newlines_in_values=True,
                                      invalid_row_handler=malformed),
      convert_options=pcsv.ConvertOptions(column_types=column_types or {},
                                          strings_can_be_null=False))
