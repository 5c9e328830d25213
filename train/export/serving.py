"""Export: a SavedModel that takes raw strings, with the signatures
`schemas.model_dir` names.

- serving: raw strings → logits, positive-class probability, label id, as
  the tutorial's model takes raw text;
- tokenize: raw strings → token ids (truncated as in training) and token
  counts, so the scoring pipeline can tokenize apart from the model and batch
  reviews by length;
- classify: token batches of any length up to seq_length → the serving
  outputs, once per exported precision.
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from schemas import model_dir as contract
from train.model.classifier import encoder_inputs

if TYPE_CHECKING:
  import tf_keras

_TEXT = tf.TensorSpec([None], tf.string, name=contract.TEXT_INPUT)
_IDS = tf.TensorSpec([None, None], tf.int32, name=contract.TOKEN_IDS)
_MASK = tf.TensorSpec([None, None], tf.int32, name=contract.TOKEN_MASK)


class ServingModule(tf.Module):
  """Preprocessing, classifier(s) and decision rule, saved as one SavedModel."""

  def __init__(self, packer, classifiers: Dict[str, "tf_keras.Model"], *,
               serving_precision: str, threshold: Optional[float] = 0.5):
    """`threshold`: the positive class's decision threshold of a two-class
    model; None for a model over more classes (the likeliest one wins)."""
    super().__init__(name="review_scorer")
    if serving_precision not in classifiers:
      raise ValueError(f"no classifier for precision {serving_precision!r}")
    self.packer = packer
    # Traced once and called by both `tokenize` and `serve`: the exported
    # model then holds one copy of the packing graph (with its many ragged
    # assertion functions) rather than one per caller, which loading on
    # every scoring worker pays for.
    self.pack = tf.function(packer.pack, input_signature=[_TEXT])
    # Only the classifiers' weights are tracked, not the Keras models: a
    # tracked model also saves every layer's own traced call functions,
    # which makes the graph larger and slower to export and to load on every
    # scoring worker (benchmarks/results/code_choices.md). The signatures
    # below are all that scoring calls.
    self.classifier_weights = {precision: list(model.weights)
                               for precision, model in classifiers.items()}
    self.serving_precision = serving_precision
    self.threshold = None if threshold is None else float(threshold)
    self.functions = {}
    for precision, model in classifiers.items():
      self.functions[precision] = self._classify_fn(model)

  def _classify_fn(self, model):
    threshold = self.threshold

    @tf.function(input_signature=[_IDS, _MASK])
    def classify_tokens(input_word_ids, input_mask):
      logits = model(encoder_inputs(input_word_ids, input_mask),
                     training=False)
      logits = tf.cast(logits, tf.float32)
      if threshold is not None:  # two classes: the positive one's logit
        probability = tf.sigmoid(logits)
        return {contract.OUTPUT_LOGITS: logits,
                contract.OUTPUT_PROBABILITY: probability,
                contract.OUTPUT_LABEL_ID:
                    tf.cast(probability >= threshold, tf.int32)}
      probabilities = tf.nn.softmax(logits, axis=-1)
      return {contract.OUTPUT_LOGITS: logits,
              contract.OUTPUT_PROBABILITIES: probabilities,
              contract.OUTPUT_PROBABILITY: tf.reduce_max(probabilities, -1),
              contract.OUTPUT_LABEL_ID:
                  tf.argmax(probabilities, -1, output_type=tf.int32)}
    return classify_tokens

  @tf.function(input_signature=[_TEXT])
  def tokenize(self, text):
    packed = self.pack(text)
    return {contract.TOKEN_IDS: packed["input_word_ids"],
            contract.NUM_TOKENS: tf.reduce_sum(packed["input_mask"], axis=1)}

  @tf.function(input_signature=[_TEXT])
  def serve(self, text):
    packed = self.pack(text)
    return self.functions[self.serving_precision](
        packed["input_word_ids"], packed["input_mask"])

  def signatures(self) -> dict:
    sigs = {contract.SERVING_SIGNATURE: self.serve.get_concrete_function(),
            contract.TOKENIZE_SIGNATURE: self.tokenize.get_concrete_function(),
            contract.CLASSIFY_SIGNATURE:
                self.functions[self.serving_precision].get_concrete_function()}
    for precision, fn in self.functions.items():
      sigs[contract.classify_signature_for(precision)] = fn.get_concrete_function()
    return sigs


def save_serving_model(module: ServingModule, path) -> None:
  """Saves the module's signatures over its weights and vocabulary table.

  The saved root holds only what the signatures capture: saving the module
  itself would also save its tf.functions as attributes, a second copy of
  every classify and packing graph that each scoring worker would turn into
  a graph again at load (benchmarks/results/code_choices.md). Loaded, the
  model is its signatures, which is all that scoring and serving call.
  """
  root = tf.Module(name="review_scorer")
  root.packer = module.packer
  root.classifier_weights = module.classifier_weights
  tf.saved_model.save(root, str(path), signatures=module.signatures())


def write_json(path, payload) -> None:
  """Writes JSON atomically: readers never see half a file, and a write
  that fails (a full disk) leaves the old file and nothing else."""
  path = pathlib.Path(path)
  tmp = path.with_suffix(path.suffix + ".tmp")
  try:
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


# Runs in a fresh interpreter with nothing but TensorFlow and tensorflow-text:
# what a scoring worker has. Anything else the SavedModel needed would fail
# here. It imports them first and then waits for its one request on stdin,
# so that the import (seconds) overlaps the export it is to check.
_RELOAD_SCRIPT = """
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the WordPiece ops the SavedModel uses
request = sys.stdin.readline()
if not request:
  sys.exit(0)
request = json.loads(request)
model = tf.saved_model.load(request["model"])
out = model.signatures[request["signature"]](
    **{request["input"]: tf.constant(request["texts"])})
json.dump([float(p) for p in out[request["output"]].numpy()], sys.stdout)
"""


_RELOAD_TIMEOUT_S = 600


class ReloadMismatch(Exception):
  """The saved model does not reproduce the in-memory model's scores."""


class ReloadCheck:
  """A fresh process that reloads one SavedModel and scores texts with it.

  Started before the export (`with ReloadCheck() as reload_check:`), it
  imports TensorFlow while the model is traced and saved; `check` then
  hands it the saved directory. Leaving the block ends a process that was
  never asked.
  """

  def __init__(self):
    self._cwd = tempfile.TemporaryDirectory()
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # Its own working directory: nothing of ours is importable from there.
    self._process = subprocess.Popen(
        [sys.executable, "-c", _RELOAD_SCRIPT], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=self._cwd.name)

  def check(self, saved_model_dir, texts: Sequence[str], expected: np.ndarray,
            *, tolerance: float = 1e-6) -> float:
    """Reloads the SavedModel; returns the max |difference| from `expected`.
    One check per process: it ends when it has answered."""
    request = {"model": str(pathlib.Path(saved_model_dir).resolve()),
               "texts": list(texts), "signature": contract.SERVING_SIGNATURE,
               "input": contract.TEXT_INPUT,
               "output": contract.OUTPUT_PROBABILITY}
    try:
      stdout, stderr = self._process.communicate(json.dumps(request) + "\n",
                                                 timeout=_RELOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      raise ReloadMismatch(f"the fresh process reloading the SavedModel gave "
                           f"no answer in {_RELOAD_TIMEOUT_S} s") from None
    finally:
      self.close()
    code = self._process.returncode
    if code != 0:
      # An empty stderr is a process killed from outside (the OOM killer).
      tail = stderr.strip().splitlines()[-1:] or [
          f"killed by signal {-code}" if code < 0 else f"exit status {code}"]
      raise ReloadMismatch(
          f"the SavedModel does not load in a fresh process: {tail[0]}")
    reloaded = np.asarray(json.loads(stdout), np.float64)
    difference = float(np.max(np.abs(reloaded - np.asarray(expected, np.float64))))
    if not difference <= tolerance:
      raise ReloadMismatch(
          f"reloaded scores differ from in-memory ones by {difference:.3g} "
          f"(> {tolerance:g})")
    return difference

  def close(self) -> None:
    if self._process.poll() is None:
      self._process.kill()
    self._process.wait()
    for stream in (self._process.stdin, self._process.stdout,
                   self._process.stderr):
      stream.close()
    self._cwd.cleanup()

  def __enter__(self) -> "ReloadCheck":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
