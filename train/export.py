"""Export: a SavedModel that takes raw strings, and the scoring contract.

Signatures of `saved_model/`:
- `serving_default(text)`: string [batch] → `logits`, `probability`
  (positive class, float32) and `label_id` (int32), as the tutorial's model
  takes raw text;
- `tokenize(text)` → `input_word_ids` int32 [batch, seq_length] (truncated as
  in training, padded with 0) and `num_tokens` int32 [batch], so the scoring
  pipeline can tokenize apart from the model and batch by length;
- `classify_tokens(input_word_ids, input_mask)` on [batch, any length ≤
  seq_length] token batches → the outputs of `serving_default`, in the
  serving precision; `classify_tokens_float32` / `classify_tokens_bfloat16`
  name a precision explicitly where one was exported.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Dict, Sequence

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
  import tf_keras

SAVED_MODEL_DIR = "saved_model"
MODEL_CARD_FILE = "model_card.json"
FORMAT_VERSION = 1

_TEXT = tf.TensorSpec([None], tf.string, name="text")
_IDS = tf.TensorSpec([None, None], tf.int32, name="input_word_ids")
_MASK = tf.TensorSpec([None, None], tf.int32, name="input_mask")


class ServingModule(tf.Module):
  """Preprocessing, classifier(s) and decision rule, saved as one SavedModel."""

  def __init__(self, packer, classifiers: Dict[str, "tf_keras.Model"], *,
               serving_precision: str, threshold: float = 0.5):
    super().__init__(name="review_scorer")
    if serving_precision not in classifiers:
      raise ValueError(f"no classifier for precision {serving_precision!r}")
    self.packer = packer
    # Only the classifiers' weights are tracked, not the Keras models: a
    # tracked model also saves every layer's own traced call functions,
    # which made MiniLM's SavedModel graph 7.0 MB instead of 4.2, its export
    # 8.2 s instead of 3.7 and its load, on every scoring worker, 3.6 s
    # instead of 1.7. The signatures below are all that scoring calls.
    self.classifier_weights = {precision: list(model.weights)
                               for precision, model in classifiers.items()}
    self.serving_precision = serving_precision
    self.threshold = float(threshold)
    self.functions = {}
    for precision, model in classifiers.items():
      self.functions[precision] = self._classify_fn(model)

  def _classify_fn(self, model):
    threshold = self.threshold

    @tf.function(input_signature=[_IDS, _MASK])
    def classify_tokens(input_word_ids, input_mask):
      logits = model({"input_word_ids": input_word_ids,
                      "input_mask": input_mask,
                      "input_type_ids": tf.zeros_like(input_word_ids)},
                     training=False)
      logits = tf.cast(logits, tf.float32)
      probability = tf.sigmoid(logits)
      return {"logits": logits, "probability": probability,
              "label_id": tf.cast(probability >= threshold, tf.int32)}
    return classify_tokens

  @tf.function(input_signature=[_TEXT])
  def tokenize(self, text):
    packed = self.packer.pack(text)
    return {"input_word_ids": packed["input_word_ids"],
            "num_tokens": tf.reduce_sum(packed["input_mask"], axis=1)}

  @tf.function(input_signature=[_TEXT])
  def serve(self, text):
    packed = self.packer.pack(text)
    return self.functions[self.serving_precision](
        packed["input_word_ids"], packed["input_mask"])

  def signatures(self) -> dict:
    sigs = {"serving_default": self.serve.get_concrete_function(),
            "tokenize": self.tokenize.get_concrete_function(),
            "classify_tokens":
                self.functions[self.serving_precision].get_concrete_function()}
    for precision, fn in self.functions.items():
      sigs[f"classify_tokens_{precision}"] = fn.get_concrete_function()
    return sigs


def save_serving_model(module: ServingModule, path) -> None:
  tf.saved_model.save(module, str(path), signatures=module.signatures())


def write_json(path, payload) -> None:
  """Writes JSON atomically: readers never see half a file."""
  path = pathlib.Path(path)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str))
  os.replace(tmp, path)


# Runs in a fresh interpreter with nothing but TensorFlow and tensorflow-text:
# what a scoring worker has. Anything else the SavedModel needed would fail here.
_RELOAD_SCRIPT = """
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the WordPiece ops the SavedModel uses
model = tf.saved_model.load(sys.argv[1])
texts = json.load(open(sys.argv[2]))
out = model.signatures["serving_default"](text=tf.constant(texts))
json.dump([float(p) for p in out["probability"].numpy()], sys.stdout)
"""


class ReloadMismatch(Exception):
  """The saved model does not reproduce the in-memory model's scores."""


def check_reload(saved_model_dir, texts: Sequence[str], expected: np.ndarray,
                 *, tolerance: float = 1e-6) -> float:
  """Reloads the SavedModel in a fresh process; returns the max |difference|."""
  saved_model_dir = pathlib.Path(saved_model_dir).resolve()
  with tempfile.TemporaryDirectory() as tmp:
    sample = pathlib.Path(tmp) / "texts.json"
    sample.write_text(json.dumps(list(texts)))
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(
        [sys.executable, "-c", _RELOAD_SCRIPT, str(saved_model_dir), str(sample)],
        capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
  if done.returncode != 0:
    tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
    raise ReloadMismatch(f"the SavedModel does not load in a fresh process: {tail[0]}")
  reloaded = np.asarray(json.loads(done.stdout), np.float64)
  difference = float(np.max(np.abs(reloaded - np.asarray(expected, np.float64))))
  if not difference <= tolerance:
    raise ReloadMismatch(
        f"reloaded scores differ from in-memory ones by {difference:.3g} "
        f"(> {tolerance:g})")
  return difference


def replace_dir(staging: pathlib.Path, final: pathlib.Path) -> None:
  """Moves a finished directory into place, replacing an older one."""
  if final.exists():
    old = final.with_name(final.name + ".old")
    if old.exists():
      shutil.rmtree(old)
    final.rename(old)
    staging.rename(final)
    shutil.rmtree(old)
  else:
    staging.rename(final)
