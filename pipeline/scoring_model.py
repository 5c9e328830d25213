"""The model as a scoring worker holds it: loaded once per process, shared by
its threads, computing in the precision chosen for this worker.

Where the worker scores in int8, or in float32 on a CPU, and the model
directory carries a copy in that precision, the copy is checked against its
card and computes (int8: ONNX Runtime; float32: OpenVINO; docs/engines.md
measures why); where the model also carries its tokenizer copy (Hugging
Face's `tokenizers`), that worker never loads TensorFlow: its import and the
SavedModel's load were most of a scoring process's start-up. Otherwise the
SavedModel (TensorFlow) computes, bfloat16, and float32 on GPUs or where the
model has no float32 copy, and tokenizes where there is no tokenizer copy.
Each goes through a module-level `shared.Shared` handle, so the Tokenize step
and RunInference of one process hold one copy of each.
"""
import dataclasses
import logging
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from apache_beam.utils import shared

from runtime import quiet, text_ops
from runtime.filesystems import local_copy
from runtime.hardware import (FLOAT32, INT8, choose_precision,
                               nvidia_device_present)
from schemas import model_dir as contract

_MODELS = shared.Shared()
_COPIES = shared.Shared()
_TOKENIZERS = shared.Shared()
_TF_CONFIGURED = threading.Lock()
_tf_configured = False
_SAID_LOCK = threading.Lock()
_SAID = set()  # (model, precision chosen): said once per worker process
worker_log = logging.getLogger("reviewscore.worker")
# The classify outputs a scored row is made of (probabilities: 3+ classes).
SCORED_OUTPUTS = (contract.OUTPUT_PROBABILITY, contract.OUTPUT_LABEL_ID,
                  contract.OUTPUT_PROBABILITIES)


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


class LoadedSavedModel:
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

  def token_lists(self, texts: Sequence[str]) -> List[np.ndarray]:
    """One int32 array of ids per text ([CLS] … [SEP], unpadded)."""
    ids, counts = self.tokenize(texts)
    return [np.ascontiguousarray(row[:int(count)], np.int32)
            for row, count in zip(ids, counts, strict=True)]

  def classify(self, signature: str, word_ids: np.ndarray, mask: np.ndarray):
    import tensorflow as tf
    out = self.signatures[signature](
        **{contract.TOKEN_IDS: tf.constant(word_ids, tf.int32),
           contract.TOKEN_MASK: tf.constant(mask, tf.int32)})
    return {name: out[name].numpy() for name in SCORED_OUTPUTS if name in out}


def _say(line: str) -> None:
  """A worker's line for the user: through the launcher's handler where the
  worker runs in the launcher's process (`pipeline.run` installs it), else
  straight to this process's stderr, tagged with its pid. Worker processes
  (multi_processing, a portable runner's pool) share the launcher's stderr,
  or their pool's, but log at ERROR, which would drop the line."""
  if not worker_log.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"worker {os.getpid()}: %(message)s"))
    worker_log.addHandler(handler)
    worker_log.setLevel(logging.INFO)
    worker_log.propagate = False
  worker_log.info(line)


def acquire_model(saved_model_dir: str) -> LoadedSavedModel:
  """The process's shared copy of the SavedModel (loaded on first use)."""
  start = time.time()
  model = _MODELS.acquire(
      lambda: LoadedSavedModel(local_copy(saved_model_dir)), tag=saved_model_dir)
  logging.info("model %s ready in %.1fs", saved_model_dir, time.time() - start)
  return model


@dataclasses.dataclass(frozen=True)
class WorkerModel:
  """What a worker needs to load the model its way (pickled with the steps):
  the SavedModel, the precision asked for, the classify signatures and
  copies of the precisions it may take, and the tokenizer copy if any."""
  saved_model_dir: str
  requested: str
  signatures: Dict[str, str]
  # precision -> {"engine", "folder", "model_file", "files_sha256"}.
  copies: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
  # {"folder": ..., "record": TokenizerCopy.to_dict()}.
  tokenizer: Optional[Dict[str, Any]] = None


@dataclasses.dataclass(frozen=True)
class Choice:
  """A worker process's precision, why, and whether a copy computes it."""
  precision: str
  why: str
  use_copy: bool


def _has_gpu() -> bool:
  """Whether TensorFlow sees a GPU here; asked only where an NVIDIA device
  is present (without one TensorFlow sees none, and need not load)."""
  if not nvidia_device_present():
    return False
  _configure_tensorflow()
  import tensorflow as tf
  return bool(tf.config.list_physical_devices("GPU"))


def choose(worker: WorkerModel) -> Choice:
  """The precision this process computes in (`auto` follows the worker's
  hardware, not the launcher's), said once per process."""
  copies = worker.copies
  int8 = copies.get(INT8)
  has_gpu = _has_gpu()
  precision, why = choose_precision(
      worker.requested, available=worker.signatures, has_gpu=has_gpu,
      int8_pays_without_vnni=bool(int8) and
      int8["engine"] == contract.ONNXRUNTIME)
  if precision == INT8 and not int8:
    raise ValueError("int8 chosen but the model offers no int8 copy")
  use_copy = precision == INT8 or (
      precision == FLOAT32 and FLOAT32 in copies and not has_gpu)
  if use_copy:
    engine = contract.ENGINE_NAMES[copies[precision]["engine"]]
    why += f"; computed by {engine} from the model's {precision} copy"
  with _SAID_LOCK:
    first = (worker.saved_model_dir, precision) not in _SAID
    _SAID.add((worker.saved_model_dir, precision))
  if first:
    _say(f"scoring in {precision} ({why}); tokenized by " + (
        "the model's tokenizer copy" if _fast_tokenizer_usable(worker)
        else "the SavedModel"))
  return Choice(precision, why, use_copy)


def _fast_tokenizer_usable(worker: WorkerModel) -> bool:
  from engines import fast_tokenizer
  return bool(worker.tokenizer) and fast_tokenizer.available()


class _Tokenizer:
  """The checked tokenizer copy (weak-referenceable for `shared`)."""

  def __init__(self, folder: str, record: Dict[str, Any]):
    from engines.fast_tokenizer import FastTokenizer
    from engines.model_dir import check_copy_files
    copy = contract.TokenizerCopy.from_dict(record)
    local = local_copy(folder)
    check_copy_files(local, copy.files_sha256, contract.TOKENIZER)
    self.tokenizer = FastTokenizer(f"{local.rstrip('/')}/{contract.TOKENIZER_FILE}",
                                   copy)

  def token_lists(self, texts: Sequence[str]) -> List[np.ndarray]:
    return self.tokenizer.token_lists(texts)


def acquire_tokenizer(worker: WorkerModel):
  """The process's tokenizer: the model's tokenizer copy where it has one
  (and `tokenizers` is installed), else the SavedModel's signature; either
  way `token_lists(texts)`."""
  if not _fast_tokenizer_usable(worker):
    return acquire_model(worker.saved_model_dir)
  folder = worker.tokenizer["folder"]
  return _TOKENIZERS.acquire(
      lambda: _Tokenizer(folder, worker.tokenizer["record"]), tag=folder)


class _Copy:
  """A checked copy loaded by its engine (weak-referenceable for `shared`)."""

  def __init__(self, engine: str, folder: str, model_file: str,
               files_sha256: Dict[str, str], precision: str):
    from engines.model_dir import check_copy_files
    local = local_copy(folder)
    check_copy_files(local, files_sha256, precision)
    path = f"{local.rstrip('/')}/{model_file}"
    if engine == contract.ONNXRUNTIME:
      from engines.onnx_classifier import Classifier
    else:
      from engines.openvino_classifier import Classifier
    self.classifier = Classifier(path)

  def classify(self, word_ids: np.ndarray, mask: np.ndarray):
    out = self.classifier.classify(word_ids, mask)
    return {name: out[name] for name in SCORED_OUTPUTS if name in out}


def acquire_copy(precision: str, copy: Dict) -> _Copy:
  """The process's shared, sha256-checked copy of `precision`
  (`copy`: engine, folder, model_file, files_sha256)."""
  return _COPIES.acquire(lambda: _Copy(precision=precision, **copy),
                         tag=f"{copy['folder']}/{copy['model_file']}")


class ScoringModel:
  """What RunInference holds on a worker: the copy it computes with, or the
  SavedModel, and the precision it chose."""

  def __init__(self, choice: Choice, *,
               saved_model: Optional[LoadedSavedModel] = None,
               signature: Optional[str] = None, copy: Optional[_Copy] = None):
    self.precision = choice.precision
    self.why = choice.why
    self._saved_model = saved_model
    self._signature = signature
    self._copy = copy

  def classify(self, word_ids: np.ndarray, mask: np.ndarray):
    if self._copy is not None:
      return self._copy.classify(word_ids, mask)
    return self._saved_model.classify(self._signature, word_ids, mask)


def load_scoring_model(worker: WorkerModel) -> ScoringModel:
  """The worker's model, in the precision chosen for it: the copy of that
  precision where one computes it (no SavedModel loaded for it), else the
  SavedModel's signature."""
  choice = choose(worker)
  if choice.use_copy:
    return ScoringModel(choice, copy=acquire_copy(
        choice.precision, worker.copies[choice.precision]))
  return ScoringModel(choice, saved_model=acquire_model(worker.saved_model_dir),
                      signature=worker.signatures[choice.precision])
