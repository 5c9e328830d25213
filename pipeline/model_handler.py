"""RunInference's ModelHandler for our model, on token-id inputs.

Thin: batching options, padding, retries and the scored rows. Loading,
sharing between threads and steps, and the per-worker precision choice are
`pipeline.scoring_model`'s.
"""
import logging
import sys
from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.utils import retry

from pipeline import records
from pipeline.scoring_model import (ScoringModel, WorkerModel,
                                    load_scoring_model)
from pipeline.settings import DEFAULTS
from schemas import model_dir as contract

# Transient faults (a GPU hiccup, a preempted accelerator) pass between the
# tries of a batch (--inference-attempts): the delays double from
# BACKOFF_SECS so that a fault has time to clear.
BACKOFF_SECS = 0.5


def token_count(element: Dict[str, Any]) -> int:
  """Length of a tokenized review, for length-aware batching."""
  return len(element[records.TOKENS])


def pad_batch(token_lists: Sequence[np.ndarray]):
  """Pads to the batch's own longest review (dynamic padding)."""
  length = max(len(t) for t in token_lists)
  ids = np.zeros((len(token_lists), length), np.int32)
  mask = np.zeros((len(token_lists), length), np.int32)
  for row, tokens in enumerate(token_lists):
    ids[row, :len(tokens)] = tokens
    mask[row, :len(tokens)] = 1
  return ids, mask


class TokenIdsModelHandler(ModelHandler[Dict[str, Any], PredictionResult,
                                        ScoringModel]):
  """Scores tokenized reviews ({'tokens': int32 ids, ...}) with classify_tokens.

  Batching is Beam's (BatchElements, configured by the keyword options here):
  in arrival order within a bundle (the pipeline sorts reviews by length in
  waves before it), or, with `max_batch_duration_secs` and
  `length_bucketing`, bucketed by token count across bundles.
  """

  def __init__(self, saved_model_dir: str, *, signatures: Dict[str, str],
               model_fingerprint: str, precision: str = "auto",
               min_batch_size: int = 1,
               max_batch_size: int = DEFAULTS["max_batch_size"],
               max_batch_duration_secs: Optional[int] = None,
               length_bucketing: bool = DEFAULTS["length_bucketing"],
               bucket_boundaries: Optional[Sequence[int]] = None,
               max_attempts: int = DEFAULTS["inference_attempts"],
               backoff_secs: float = BACKOFF_SECS,
               copies: Optional[Dict[str, Dict[str, Any]]] = None,
               tokenizer: Optional[Dict[str, Any]] = None):
    bucketing = {}
    if length_bucketing:
      bucketing = dict(batch_length_fn=token_count,
                       batch_bucket_boundaries=list(bucket_boundaries)
                       if bucket_boundaries else None)
    super().__init__(min_batch_size=min_batch_size,
                     max_batch_size=max_batch_size,
                     max_batch_duration_secs=max_batch_duration_secs,
                     **bucketing)
    # precision -> classify signature, for the precisions the model carries;
    # copies: precision -> {"engine", "folder", "model_file", "files_sha256"};
    # tokenizer: {"folder", "record"} of the tokenizer copy.
    self.worker_model = WorkerModel(
        saved_model_dir=saved_model_dir, requested=precision,
        signatures=dict(signatures), copies=dict(copies or {}),
        tokenizer=tokenizer)
    self._fingerprint = model_fingerprint
    self._max_attempts = max(1, int(max_attempts))
    self._backoff_secs = backoff_secs

  def load_model(self) -> ScoringModel:
    return load_scoring_model(self.worker_model)

  def _classify(self, model: ScoringModel, ids, mask):
    """One model call; the seam where transient faults surface."""
    return model.classify(ids, mask)

  def _classify_retrying(self, model: ScoringModel, ids, mask):
    """`_classify`, tried up to max_attempts times with exponential backoff;
    the last failure propagates, and RunInference dead-letters the batch."""
    attempts = iter(range(1, self._max_attempts))

    def log_retry(_message, delay, *_details):
      # Beam logs from inside its handler of the failure: exc_info is it.
      logging.warning("inference on %d reviews failed (attempt %d of %d, "
                      "retrying in %.1fs): %s", len(ids), next(attempts),
                      self._max_attempts, delay, sys.exc_info()[1])

    with_retries = retry.with_exponential_backoff(
        num_retries=self._max_attempts - 1,
        initial_delay_secs=self._backoff_secs, logger=log_retry,
        retry_filter=lambda _: True, fuzz=False)
    return with_retries(self._classify)(model, ids, mask)

  def run_inference(self, batch: Sequence[Dict[str, Any]], model: ScoringModel,
                    inference_args: Optional[Dict[str, Any]] = None
                    ) -> Iterable[PredictionResult]:
    ids, mask = pad_batch([e[records.TOKENS] for e in batch])
    # Padding efficiency = real / padded tokens: what bucketing saves.
    Metrics.counter("reviewscore", "tokens_real").inc(int(mask.sum()))
    Metrics.counter("reviewscore", "tokens_padded").inc(int(mask.size))
    Metrics.distribution("reviewscore", "inference_batch_size").update(
        len(batch))
    outputs = self._classify_retrying(model, ids, mask)
    precision = model.precision
    rows = [{contract.OUTPUT_PROBABILITY: float(p),
             contract.OUTPUT_LABEL_ID: int(label), "precision": precision,
             "precision_why": model.why}
            for p, label in zip(outputs[contract.OUTPUT_PROBABILITY],
                                outputs[contract.OUTPUT_LABEL_ID], strict=True)]
    if contract.OUTPUT_PROBABILITIES in outputs:
      for row, scores in zip(rows, outputs[contract.OUTPUT_PROBABILITIES],
                             strict=True):
        row[contract.OUTPUT_PROBABILITIES] = scores.tolist()
    return [PredictionResult(example, row, self._fingerprint)
            for example, row in zip(batch, rows, strict=True)]

  def get_num_bytes(self, batch: Sequence[Dict[str, Any]]) -> int:
    return sum(e[records.TOKENS].nbytes for e in batch)

  def get_metrics_namespace(self) -> str:
    return "reviewscore.RunInference"
