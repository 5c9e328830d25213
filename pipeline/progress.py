"""Progress a person can read: reviews done of the total, rate, time left.

DirectRunner blocks the launcher until the end, so progress comes from the
workers themselves (on DirectRunner they share the launcher's stderr; on
Dataflow the lines land in the worker logs). Each worker process keeps one
tally shared by its threads. The total is exact where the launcher knows it
(Parquet footers; one review per file) and estimated from the bytes read
for uncompressed text, CSV and JSON Lines; where it knows neither, the line
says the count and the rate.
"""
import dataclasses
import logging
import threading
import time
from typing import Optional

progress_log = logging.getLogger("reviewscore.progress")
PROGRESS_EVERY_SECS = 15.0


@dataclasses.dataclass(frozen=True)
class Expected:
  """What the launcher knows of the work ahead, handed to every worker."""
  run_id: str = ""
  reviews: Optional[int] = None  # exact count of input records
  input_bytes: Optional[int] = None  # uncompressed bytes, where not exact
  workers: Optional[int] = 1  # worker processes sharing it; None: unknown


class _Tally:
  """One worker process's counts, shared by its threads."""

  def __init__(self):
    self.lock = threading.Lock()
    self.reset()

  def reset(self, run_id: str = "", now: Optional[float] = None):
    self.run_id = run_id
    self.done = self.read = self.bytes_read = 0
    self.start = self.last_log = now


_TALLY = _Tally()


def record_read(run_id: str, size_in_bytes: int) -> None:
  """A reader's record: its bytes as read from the file (text formats)."""
  with _TALLY.lock:
    if _TALLY.run_id != run_id:
      _TALLY.reset(run_id, time.monotonic())
    _TALLY.read += 1
    _TALLY.bytes_read += size_in_bytes


def record_done(expected: Expected, now: Optional[float] = None) -> None:
  """A review scored or dead-lettered: a line every PROGRESS_EVERY_SECS, and
  the last when a known total is reached."""
  now = time.monotonic() if now is None else now
  with _TALLY.lock:
    tally = _TALLY
    if tally.run_id != expected.run_id or tally.start is None:
      tally.reset(expected.run_id, now)  # another run in this process
    tally.done += 1
    finished = bool(expected.reviews and expected.workers == 1
                    and tally.done == expected.reviews)
    if not finished and now - tally.last_log < PROGRESS_EVERY_SECS:
      return
    tally.last_log = now
    line = describe(tally.done, now - tally.start, expected, read=tally.read,
                    bytes_read=tally.bytes_read)
  progress_log.info(line)


def describe(done: int, elapsed: float, expected: Expected, *, read: int = 0,
             bytes_read: int = 0) -> str:
  """'12,345 of 25,000 reviews done (49%), 28.1/s, about 7 min left'; a
  worker among several speaks for itself and estimates the job's end as if
  the others keep its pace."""
  rate = done / elapsed if elapsed > 0 else 0.0
  total, about = expected.reviews, ""
  if total is None and expected.input_bytes and bytes_read and read:
    # The reviews so far tell how many bytes a review takes in this input.
    total, about = round(expected.input_bytes * read / bytes_read), "about "
  workers = expected.workers
  if workers == 1:
    if total is None:
      return f"{done:,} reviews done, {rate:,.1f}/s (the input's size is unknown)"
    share = min(done / total, 1.0) if total else 1.0
    return (f"{done:,} of {about}{total:,} reviews done ({share:.0%}), "
            f"{rate:,.1f}/s, {_time_left(total - done, rate)}")
  mine = f"this worker: {done:,} reviews done, {rate:,.1f}/s"
  if total is None:
    return mine
  if workers is None:
    return f"{mine}; the job has {about}{total:,}"
  left = total - done * workers
  return (f"{mine}; the job's {about}{total:,} take about "
          f"{_time_left(left, rate * workers, unit='more')} if its {workers} "
          "workers keep this pace")


def _time_left(reviews: float, rate: float, unit: str = "left") -> str:
  if reviews <= 0:
    return "done" if unit == "left" else "no time"
  if rate <= 0:
    return "time left unknown"
  seconds = reviews / rate
  if seconds < 90:
    amount = f"{seconds:.0f} s"
  elif seconds < 5400:
    amount = f"{seconds / 60:.0f} min"
  else:
    amount = f"{seconds / 3600:.1f} h"
  return f"{amount} {unit}" if unit == "left" else f"{amount} more"
