"""Lines of any length from a stream, in bounded memory."""
from typing import Iterator, Optional, Tuple

_CHUNK_BYTES = 1 << 16


def read_lines(stream, max_bytes: int) -> Iterator[Tuple[int, Optional[bytes],
                                                         int]]:
  """Yields (line number, bytes or None when too long, byte length).

  Reads fixed-size chunks, so a line of any length costs no more memory
  than --max-review-bytes: the bytes past it are counted and dropped.
  """
  number, pending, pending_len, overflow = 1, [], 0, False

  def finish():
    if overflow:
      return number, None, pending_len
    line = b"".join(pending)
    return number, line[:-1] if line.endswith(b"\r") else line, pending_len

  while True:
    chunk = stream.read(_CHUNK_BYTES)
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
