"""Tokenization as a step of its own, so inference can batch by length.

Uses the SavedModel's `tokenize` signature (exactly training's WordPiece,
truncation and special tokens) or the model's tokenizer copy, checked to
give the same ids (`scoring_model.acquire_tokenizer`). Emits one record per
review with its token ids unpadded (np.int32, [CLS] … [SEP]); padding is
the inference batch's job.
"""
import logging
from typing import List

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import records
from pipeline.dead_letters import DEAD, error_detail
from schemas import columns as c


class TokenizeBatch(beam.DoFn):
  """[valid review records] → tokenized records, dead letters tagged DEAD."""

  def __init__(self, worker_model):
    """`worker_model`: `scoring_model.WorkerModel`, RunInference's too."""
    self._worker_model = worker_model
    self._tokenizer = None

  def setup(self):
    # Heavy, once per process: the tokenizer copy, or the same SavedModel
    # object RunInference uses.
    from pipeline.scoring_model import acquire_tokenizer
    self._tokenizer = acquire_tokenizer(self._worker_model)
    self._tokenized = Metrics.counter("reviewscore", "tokenized")
    self._tokens = Metrics.distribution("reviewscore", "tokens_per_review")

  def _emit(self, batch: List[records.Record]):
    token_lists = self._tokenizer.token_lists(
        [r[records.TEXT] for r in batch])
    for record, tokens in zip(batch, token_lists, strict=True):
      self._tokenized.inc()
      self._tokens.update(len(tokens))
      yield records.tokenized(record, tokens)

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
