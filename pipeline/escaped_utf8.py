"""A text codec for pyarrow's CSV reader: UTF-8, with each byte that is not
UTF-8 carried through as one private-use character instead of an error.

pyarrow decodes a CSV row strictly before its invalid-row handler sees it, so
a row with both the wrong number of fields and a byte that is not UTF-8 fails
the whole file. Read through this codec (`ReadOptions(encoding=ENCODING)`,
which pyarrow transcodes with Python's codecs), every file parses; valid
UTF-8 (names, BOM, texts) comes out unchanged, and `original` gives back the
bytes of any cell or row that held such a byte, for the record's own check
to dead-letter as not UTF-8.
"""
import codecs

ENCODING = "reviewscore-utf8-escaped"
_ERRORS = "reviewscore-escape-bytes"
# Supplementary Private Use Area-A: byte b becomes U+F0000 + b.
_BASE = 0xF0000
_MARKER = chr(_BASE).encode("utf-8")[:2]  # the two bytes all such chars open with


def _escape(error: UnicodeDecodeError):
  bad = error.object[error.start:error.end]
  return "".join(chr(_BASE + byte) for byte in bad), error.end


class _IncrementalDecoder(codecs.BufferedIncrementalDecoder):
  def _buffer_decode(self, data, errors, final):
    return codecs.utf_8_decode(data, _ERRORS, final)


def _search(name: str):
  if name.replace("_", "-") != ENCODING:
    return None
  utf8 = codecs.lookup("utf-8")
  return codecs.CodecInfo(
      utf8.encode, lambda data, errors="strict": codecs.utf_8_decode(
          data, _ERRORS, True),
      incrementalencoder=utf8.incrementalencoder,
      incrementaldecoder=_IncrementalDecoder, name=ENCODING)


def register() -> None:
  """Makes ENCODING known to Python's codecs (once per process)."""
  try:
    codecs.lookup_error(_ERRORS)
  except LookupError:
    codecs.register_error(_ERRORS, _escape)
    codecs.register(_search)


def original(value):
  """The bytes a cell (UTF-8 bytes of the decoded text) or a row (str) had
  in the file; a cell without escaped bytes is returned as it is."""
  if isinstance(value, bytes):
    if _MARKER not in value:
      return value
    value = value.decode("utf-8")
  elif not any(ord(ch) >= _BASE and ord(ch) < _BASE + 256 for ch in value):
    return value.encode("utf-8")
  out = bytearray()
  for ch in value:
    point = ord(ch)
    out += (bytes([point - _BASE]) if _BASE <= point < _BASE + 256
            else ch.encode("utf-8"))
  return bytes(out)
