"""The records the scoring steps pass each other, and their keys.

Plain dicts of plain values, because Beam encodes those fast (a class of
ours would be pickled record by record); their keys are declared here and
built only by the functions below, so a step cannot read a key that the
step before it never wrote.

    Read       → raw:    id, source, value, carried, defect, detail
    Validate   → valid:  id, source, text, carried
    Tokenize   → tokens: id, source, tokens, carried
    any step   → dead letter: id, source, reason, detail, value
"""
from typing import Any, Dict, Optional

import numpy as np

ID = "id"
SOURCE = "source"  # the input file, as matched
CARRIED = "carried"  # {column: value} copied from input to output
VALUE = "value"  # the text column's value as read, before validation
DEFECT = "defect"  # a reason found while reading (a bad row), else None
DETAIL = "detail"
TEXT = "text"
TOKENS = "tokens"  # int32 wordpiece ids, unpadded
REASON = "reason"

Record = Dict[str, Any]


def raw(review_id, source: str, value, carried=None, defect=None,
        detail=None) -> Record:
  return {ID: review_id, SOURCE: source, VALUE: value, CARRIED: carried or {},
          DEFECT: defect, DETAIL: detail}


def valid(record: Record, text: str) -> Record:
  return {ID: record[ID], SOURCE: record[SOURCE], TEXT: text,
          CARRIED: record[CARRIED]}


def tokenized(record: Record, tokens: np.ndarray) -> Record:
  return {ID: record[ID], SOURCE: record[SOURCE], TOKENS: tokens,
          CARRIED: record[CARRIED]}


def dead(record: Record, reason: str, detail=None, value=None) -> Record:
  """The letter for `record` (any record with an id and a source)."""
  return {ID: record.get(ID), SOURCE: record.get(SOURCE), REASON: reason,
          DETAIL: detail, VALUE: value}


def dead_text(record: Record) -> Optional[str]:
  """The text of a record that failed after validation (for its letter)."""
  return record.get(TEXT)
