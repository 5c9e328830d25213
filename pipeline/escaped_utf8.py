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
import re

ENCODING = "reviewscore-utf8-escaped"
# Supplementary Private Use Area-A: a byte b that is not UTF-8 becomes
# U+F0000 + b; a real character in U+F0000..U+F0100 (rare: icon fonts) is
# kept behind the marker U+F0100, so the two can never be confused.
_BASE = 0xF0000
_MARKER = chr(_BASE + 0x100)
_RESERVED = re.compile("[\U000F0000-\U000F0100]")
_TO_ESCAPE = re.compile("[\udc80-\udcff\U000F0000-\U000F0100]")
_RESERVED_LEAD = chr(_BASE).encode("utf-8")[:2]  # every reserved char's first bytes


def _escape(match) -> str:
  point = ord(match.group())
  if 0xDC80 <= point <= 0xDCFF:  # surrogateescape's form of a bad byte
    return chr(_BASE + point - 0xDC00)
  return _MARKER + match.group()


def _decode(data, final: bool):
  text, consumed = codecs.utf_8_decode(data, "surrogateescape", final)
  return _TO_ESCAPE.sub(_escape, text), consumed


class _IncrementalDecoder(codecs.BufferedIncrementalDecoder):
  def _buffer_decode(self, data, errors, final):
    return _decode(data, final)


def _search(name: str):
  if name.replace("_", "-") != ENCODING:
    return None
  utf8 = codecs.lookup("utf-8")
  return codecs.CodecInfo(
      utf8.encode, lambda data, errors="strict": _decode(data, True),
      incrementalencoder=utf8.incrementalencoder,
      incrementaldecoder=_IncrementalDecoder, name=ENCODING)


_registered = False


def register() -> None:
  """Makes ENCODING known to Python's codecs (once per process)."""
  global _registered
  if not _registered:
    codecs.register(_search)
    _registered = True


def original(value) -> bytes:
  """The bytes a cell (UTF-8 bytes of the decoded text) or a row (str) had
  in the file."""
  if isinstance(value, bytes):
    if _RESERVED_LEAD not in value:
      return value
    value = value.decode("utf-8")
  elif not _RESERVED.search(value):
    return value.encode("utf-8")
  out = bytearray()
  literal = False
  for ch in value:
    point = ord(ch)
    if literal or not _BASE <= point <= _BASE + 0x100:
      out += ch.encode("utf-8")
      literal = False
    elif ch == _MARKER:
      literal = True
    else:
      out.append(point - _BASE)
  return bytes(out)
