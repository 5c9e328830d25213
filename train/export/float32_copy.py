"""The float32 copy: the exported float32 classifier converted to OpenVINO
as it is (no quantization), for CPU workers.

On CPUs OpenVINO computes the same float32 model faster than TensorFlow
(docs/engines.md measures both on the same token ids). The copy is offered
only where its probabilities on validation reviews are within
`max_probability_difference` of TensorFlow's; otherwise its files are
removed and the card says why. The same model gives the same files.
"""
import pathlib
import shutil
from typing import Callable

import numpy as np

from engines import openvino_classifier as engine
from schemas import model_dir as contract
from train.loops.trainer import TokenizedReviews, predict_logits

# Validation reviews on which the copy's outputs are compared with
# TensorFlow's (the longest ones, where float32 sums run longest).
COMPARED_REVIEWS = 64


class CopyFailed(Exception):
  """The copy could not be made: the model is complete without it."""


def probabilities(logits: np.ndarray) -> np.ndarray:
  """Each class's probability (the positive one's, for one logit)."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim == 1:
    return 1.0 / (1.0 + np.exp(-logits))
  shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
  return shifted / shifted.sum(axis=1, keepdims=True)


def _longest(split: TokenizedReviews, count: int) -> TokenizedReviews:
  rows = np.sort(np.argsort(-split.lengths, kind="stable")[:count])
  return TokenizedReviews(split.word_ids[rows], split.lengths[rows],
                          split.labels[rows])


def make_float32_copy(model_dir, *, float32_signature: str,
                      validation: TokenizedReviews,
                      compared_reviews: int = COMPARED_REVIEWS,
                      max_probability_difference: float =
                      contract.FLOAT32_MAX_PROBABILITY_DIFFERENCE,
                      progress: Callable[[str], None] = print
                      ) -> contract.Float32Copy:
  """Converts DIR/saved_model's `float32_signature` into DIR/float32/."""
  import tensorflow as tf

  from runtime import text_ops
  model_dir = pathlib.Path(model_dir)
  saved_model = model_dir / contract.SAVED_MODEL_DIR
  copy_dir = model_dir / contract.FLOAT32_COPY_DIR
  staging = model_dir / (contract.FLOAT32_COPY_DIR + ".partial")
  shutil.rmtree(staging, ignore_errors=True)
  runtime = f"{engine.RUNTIME_NAME} {engine.version()}"
  progress("float32 copy: converting the float32 classifier to OpenVINO")
  staging.mkdir(parents=True)
  xml = staging / contract.FLOAT32_MODEL_FILE
  text_ops.register_text_ops()  # the SavedModel's tokenizer ops
  module = tf.saved_model.load(str(saved_model))  # converted and compared
  try:
    engine.save(engine.convert_signature(str(saved_model), float32_signature,
                                         module=module), str(xml))
  except Exception as e:  # OpenVINO's errors have no common base
    shutil.rmtree(staging, ignore_errors=True)
    raise CopyFailed(f"conversion failed: {type(e).__name__}: {e}") from e
  compared = _longest(validation, compared_reviews)
  reference = module.signatures[float32_signature]

  def tensorflow_logits(word_ids, mask):
    return reference(**{contract.TOKEN_IDS: tf.constant(word_ids, tf.int32),
                        contract.TOKEN_MASK: tf.constant(mask, tf.int32)}
                     )[contract.OUTPUT_LOGITS].numpy()

  converted = engine.Classifier(str(xml))

  def openvino_logits(word_ids, mask):
    return converted.classify(word_ids, mask)[contract.OUTPUT_LOGITS]

  difference = float(np.max(np.abs(
      probabilities(predict_logits(openvino_logits, compared)) -
      probabilities(predict_logits(tensorflow_logits, compared)))))
  record = dict(runtime=runtime, compared_reviews=len(compared),
                largest_probability_difference=difference,
                max_probability_difference=max_probability_difference)
  if difference <= max_probability_difference:
    files = {name: engine.sha256_of(str(staging / name))
             for name in contract.FLOAT32_FILES}
    shutil.rmtree(copy_dir, ignore_errors=True)
    staging.rename(copy_dir)
    progress(f"float32 copy: offered (probabilities within {difference:.1e} "
             f"of TensorFlow's on {len(compared)} validation reviews)")
    return contract.Float32Copy(offered=True, files_sha256=files, **record)
  shutil.rmtree(staging, ignore_errors=True)
  shutil.rmtree(copy_dir, ignore_errors=True)
  reason = (f"its probabilities differ from TensorFlow's by up to "
            f"{difference:.1e} on {len(compared)} validation reviews (at most "
            f"{max_probability_difference:.0e} allowed)")
  progress(f"float32 copy: not offered: {reason}; scoring keeps TensorFlow")
  return contract.Float32Copy(offered=False, files_sha256={}, reason=reason,
                              **record)
