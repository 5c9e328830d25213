"""RunInference's ModelHandler for our SavedModel, on token-id inputs.

The SavedModel is loaded once per worker process and shared by its threads:
RunInference holds what `load_model` returns through `shared.Shared`, and
`load_model` itself goes through the module-level `_MODELS` handle, which
the Tokenize step uses too, so a worker holds one copy of the model, not two.
"""
import logging
import sys
import threading
import time
from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.utils import retry, shared

from runtime.filesystems import local_copy
from pipeline.settings import DEFAULTS
from runtime import quiet, text_ops
from runtime.hardware import choose_precision
from schemas import model_dir as contract

# One handle per process (module state is per process): every step that
# acquires a model through it with the same tag gets the same object.
_MODELS = shared.Shared()
_TF_CONFIGURED = threading.Lock()
_tf_configured = False
# Transient faults (a GPU hiccup, a preempted accelerator) pass between the
# tries of a batch (--inference-attempts): the delays double from
# BACKOFF_SECS so that a fault has time to clear.
BACKOFF_SECS = 0.5
worker_log = logging.getLogger("reviewscore.worker")
# The classify outputs a scored row is made of (probabilities: 3+ classes).
_SCORED_OUTPUTS = (contract.OUTPUT_PROBABILITY, contract.OUTPUT_LABEL_ID,
                   contract.OUTPUT_PROBABILITIES)
_LOGGED_CHOICES = set()


def _configure_tensorflow():
  """GPU memory growth before TensorFlow touches the GPU, once per process."""
  global _tf_configured
  with _TF_CONFIGURED:
    if _tf_configured:
      return
    tf = quiet.import_tensorflow(keras=False)
    for gpu in tf.config.list_physical_devices("GPU"):
      try:
        # Without it TensorFlow takes the whole GPU at the first op, and a
        # second process (or the tokenizer's) on the worker then fails.
        tf.config.experimental.set_memory_growth(gpu, True)
      except RuntimeError:  # already initialised by someone else: keep going
        logging.warning("could not enable memory growth on %s", gpu.name)
    _tf_configured = True


class _LoadedModel:
  """The loaded SavedModel with the signatures we call (weak-referenceable)."""

  def __init__(self, saved_model_dir: str):
    _configure_tensorflow()
    import tensorflow as tf
    text_ops.register_text_ops()  # the tokenizer's WordPiece ops
    self.path = saved_model_dir
    self.module = tf.saved_model.load(saved_model_dir)
    self.signatures = self.module.signatures
    self.has_gpu = bool(tf.config.list_physical_devices("GPU"))

  def tokenize(self, texts: Sequence[str]):
    import tensorflow as tf
    out = self.signatures[contract.TOKENIZE_SIGNATURE](
        **{contract.TEXT_INPUT: tf.constant(list(texts), tf.string)})
    return out[contract.TOKEN_IDS].numpy(), out[contract.NUM_TOKENS].numpy()

  def classify(self, signature: str, word_ids: np.ndarray, mask: np.ndarray):
    import tensorflow as tf
    out = self.signatures[signature](
        **{contract.TOKEN_IDS: tf.constant(word_ids, tf.int32),
           contract.TOKEN_MASK: tf.constant(mask, tf.int32)})
    return {name: out[name].numpy() for name in _SCORED_OUTPUTS if name in out}


def acquire_model(saved_model_dir: str) -> _LoadedModel:
  """The process's shared copy of the SavedModel (loaded on first use)."""
  start = time.time()
  model = _MODELS.acquire(
      lambda: _LoadedModel(local_copy(saved_model_dir)), tag=saved_model_dir)
  logging.info("model %s ready in %.1fs", saved_model_dir, time.time() - start)
  return model


def token_count(element: Dict[str, Any]) -> int:
  """Length of a tokenized review, for length-aware batching."""
  return len(element["tokens"])


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
                                        _LoadedModel]):
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
               backoff_secs: float = BACKOFF_SECS):
    bucketing = {}
    if length_bucketing:
      bucketing = dict(batch_length_fn=token_count,
                       batch_bucket_boundaries=list(bucket_boundaries)
                       if bucket_boundaries else None)
    super().__init__(min_batch_size=min_batch_size,
                     max_batch_size=max_batch_size,
                     max_batch_duration_secs=max_batch_duration_secs,
                     **bucketing)
    self._saved_model_dir = saved_model_dir
    # precision -> classify signature, for the precisions the model carries.
    self._signatures = dict(signatures)
    self._requested_precision = precision
    self._precision: Optional[str] = None
    self._fingerprint = model_fingerprint
    self._max_attempts = max(1, int(max_attempts))
    self._backoff_secs = backoff_secs

  def load_model(self) -> _LoadedModel:
    model = acquire_model(self._saved_model_dir)
    self.precision_for(model)
    return model

  def precision_for(self, model: _LoadedModel) -> str:
    """The precision this worker scores in, chosen once, when it has loaded
    the model: `auto` follows this worker's hardware, not the launcher's.
    """
    if self._precision is None:
      precision, why = choose_precision(
          self._requested_precision, available=self._signatures,
          has_gpu=model.has_gpu)
      key = (self._saved_model_dir, precision)
      if key not in _LOGGED_CHOICES:  # once per worker process
        _LOGGED_CHOICES.add(key)
        worker_log.info("scoring in %s (%s)", precision, why)
      self._precision = precision
    return self._precision

  def _classify(self, model: _LoadedModel, ids, mask):
    """One model call; the seam where transient faults surface."""
    return model.classify(self._signatures[self.precision_for(model)], ids,
                          mask)

  def _classify_retrying(self, model: _LoadedModel, ids, mask):
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

  def run_inference(self, batch: Sequence[Dict[str, Any]], model: _LoadedModel,
                    inference_args: Optional[Dict[str, Any]] = None
                    ) -> Iterable[PredictionResult]:
    ids, mask = pad_batch([e["tokens"] for e in batch])
    # Padding efficiency = real / padded tokens: what bucketing saves.
    Metrics.counter("reviewscore", "tokens_real").inc(int(mask.sum()))
    Metrics.counter("reviewscore", "tokens_padded").inc(int(mask.size))
    Metrics.distribution("reviewscore", "inference_batch_size").update(
        len(batch))
    outputs = self._classify_retrying(model, ids, mask)
    precision = self.precision_for(model)
    rows = [{contract.OUTPUT_PROBABILITY: float(p),
             contract.OUTPUT_LABEL_ID: int(label), "precision": precision}
            for p, label in zip(outputs[contract.OUTPUT_PROBABILITY],
                                outputs[contract.OUTPUT_LABEL_ID], strict=True)]
    if contract.OUTPUT_PROBABILITIES in outputs:
      for row, scores in zip(rows, outputs[contract.OUTPUT_PROBABILITIES],
                             strict=True):
        row[contract.OUTPUT_PROBABILITIES] = scores.tolist()
    return [PredictionResult(example, row, self._fingerprint)
            for example, row in zip(batch, rows, strict=True)]

  def get_num_bytes(self, batch: Sequence[Dict[str, Any]]) -> int:
    return sum(e["tokens"].nbytes for e in batch)

  def get_metrics_namespace(self) -> str:
    return "reviewscore.RunInference"
