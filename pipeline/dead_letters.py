"""Dead letters: the records the pipeline could not score, and why.

Every step that gives up on a record builds its letter here and, where the
step has several outputs, emits it under the `DEAD` tag; `FormatDeadLetter`
turns letters into rows of schemas.dead_letter_schema(). One constructor
keeps the letters of every step alike, so no record vanishes for want of a
field.
"""
from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import progress, records
from schemas import columns as c

DEAD = "dead"
PREVIEW_CHARS = 200


def error_detail(error: BaseException) -> str:
  """An exception as a letter's detail."""
  return f"{type(error).__name__}: {error}"


def _preview(value) -> Optional[str]:
  if value is None:
    return None
  if isinstance(value, bytes):
    value = value[:PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
  elif not isinstance(value, str):
    value = repr(value)
  return value[:PREVIEW_CHARS]


class FormatDeadLetter(beam.DoFn):
  """Dead letters → rows of schemas.dead_letter_schema(), counted by reason."""

  def __init__(self, expected: Optional[progress.Expected] = None):
    self._expected = expected

  def setup(self):
    self._total = Metrics.counter("reviewscore", "dead_lettered")
    self._by_reason = {}

  def process(self, letter):
    reason = letter[records.REASON]
    if reason not in self._by_reason:
      self._by_reason[reason] = Metrics.counter("reviewscore",
                                                f"dead_lettered.{reason}")
    self._total.inc()
    self._by_reason[reason].inc()
    if self._expected is not None:
      progress.record_done(self._expected)
    detail, review_id = letter[records.DETAIL], letter[records.ID]
    yield {c.REVIEW_ID: None if review_id is None else str(review_id),
           c.SOURCE_FILE: letter[records.SOURCE], c.ERROR_REASON: reason,
           c.ERROR_DETAIL: None if detail is None else str(detail)[:1000],
           c.ERROR_TEXT_PREVIEW: _preview(letter[records.VALUE])}
