"""Tokenization as a step of its own, so inference can batch by length.

Uses the SavedModel's `tokenize` signature: exactly training's WordPiece,
truncation and special tokens. Emits one record per review with its token
ids unpadded (np.int32, [CLS] … [SEP]); padding is the inference batch's job.
"""
import logging
from typing import List

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipeline import records
from pipeline.dead_letters import DEAD, error_detail
from schemas import columns as c


class TokenizeBatch(beam.DoFn):
  """[valid review records] → tokenized records, dead letters tagged DEAD."""

  def __init__(self, saved_model_dir: str):
    self._saved_model_dir = saved_model_dir
    self._model = None

  def setup(self):
    # Heavy: the same per-process model object RunInference uses.
    from pipeline.scoring_model import acquire_model
    self._model = acquire_model(self._saved_model_dir)
    self._tokenized = Metrics.counter("reviewscore", "tokenized")
    self._tokens = Metrics.distribution("reviewscore", "tokens_per_review")

  def _emit(self, batch: List[records.Record]):
    ids, counts = self._model.tokenize([r[records.TEXT] for r in batch])
    for record, row, count in zip(batch, ids, counts, strict=True):
      self._tokenized.inc()
      self._tokens.update(int(count))
      yield records.tokenized(
          record, np.ascontiguousarray(row[:int(count)], np.int32))

  def process(self, batch):
    try:
      outputs = list(self._emit(batch))
    except Exception as e:  # one review breaking the batch: find which
      logging.warning("tokenizing %d reviews failed (%s): retrying one by one",
                      len(batch), e)
      outputs = []
      for record in batch:
        try:
          outputs.extend(self._emit([record]))
        except Exception as single:
          outputs.append(beam.pvalue.TaggedOutput(DEAD, records.dead(
              record, c.REASON_TOKENIZE_FAILED, error_detail(single),
              record[records.TEXT])))
    yield from outputs
