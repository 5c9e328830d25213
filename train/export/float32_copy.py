"""The float32 copy: the exported float32 classifier converted to OpenVINO
as it is (no quantization), for CPU workers.

On CPUs OpenVINO computes the same float32 model faster than TensorFlow
(docs/engines.md measures both on the same token ids). The copy is offered
only where its probabilities on validation reviews are within
`max_probability_difference` of TensorFlow's; otherwise its files are
left out and the card says why. The same model gives the same files.
Whatever fails, the model directory is left as it was: the copy is staged
beside it and installed by `train.export.copies`.
"""
import pathlib
import shutil
from typing import Callable, Optional, Tuple

import numpy as np

from engines import openvino_classifier as engine
from evaluation.metrics import probabilities
from runtime.filesystems import sha256_of
from schemas import model_dir as contract
from train.loops.trainer import TokenizedReviews, predict_logits

# Validation reviews on which the copy's outputs are compared with
# TensorFlow's (the longest ones, where float32 sums run longest).
COMPARED_REVIEWS = 64


class CopyFailed(Exception):
  """The copy could not be made: the model is complete without it."""


def _longest(split: TokenizedReviews, count: int) -> TokenizedReviews:
  rows = np.sort(np.argsort(-split.lengths, kind="stable")[:count])
  return TokenizedReviews(split.word_ids[rows], split.lengths[rows],
                          split.labels[rows])


def staging_dir(model_dir) -> pathlib.Path:
  return pathlib.Path(model_dir) / (contract.FLOAT32_COPY_DIR + ".partial")


def make_float32_copy(model_dir, *, module, float32_signature: str,
                      validation: TokenizedReviews,
                      compared_reviews: int = COMPARED_REVIEWS,
                      max_probability_difference: float =
                      contract.FLOAT32_MAX_PROBABILITY_DIFFERENCE,
                      progress: Callable[[str], None] = print
                      ) -> Tuple[contract.Float32Copy, Optional[pathlib.Path]]:
  """Converts `module.signatures[float32_signature]` (the loaded
  DIR/saved_model) into DIR/float32.partial/.

  Returns the card's record of the copy and the staged folder to install
  (None where its outputs did not match TensorFlow's). CopyFailed, with
  nothing left behind, where any step fails.
  """
  import tensorflow as tf
  staging = staging_dir(model_dir)
  shutil.rmtree(staging, ignore_errors=True)
  compared = _longest(validation, compared_reviews)
  reference = module.signatures[float32_signature]

  def tensorflow_logits(word_ids, mask):
    return reference(**{contract.TOKEN_IDS: tf.constant(word_ids, tf.int32),
                        contract.TOKEN_MASK: tf.constant(mask, tf.int32)}
                     )[contract.OUTPUT_LOGITS].numpy()

  try:
    runtime = f"{engine.RUNTIME_NAME} {engine.version()}"
    progress("float32 copy: converting the float32 classifier to OpenVINO")
    staging.mkdir(parents=True)
    xml = staging / contract.FLOAT32_MODEL_FILE
    engine.save(engine.convert_signature(None, float32_signature,
                                         module=module), str(xml))
    converted = engine.Classifier(str(xml))

    def openvino_logits(word_ids, mask):
      return converted.classify(word_ids, mask)[contract.OUTPUT_LOGITS]

    difference = float(np.max(np.abs(
        probabilities(predict_logits(openvino_logits, compared)) -
        probabilities(predict_logits(tensorflow_logits, compared)))))
    files = {name: sha256_of(str(staging / name))
             for name in contract.FLOAT32_FILES}
  except Exception as e:  # OpenVINO's errors have no common base
    shutil.rmtree(staging, ignore_errors=True)
    raise CopyFailed(f"{type(e).__name__}: {e}") from e
  record = dict(runtime=runtime, compared_reviews=len(compared),
                largest_probability_difference=difference,
                max_probability_difference=max_probability_difference)
  if difference <= max_probability_difference:
    progress(f"float32 copy: offered (probabilities within {difference:.1e} "
             f"of TensorFlow's on {len(compared)} validation reviews)")
    return contract.Float32Copy(offered=True, files_sha256=files,
                                **record), staging
  shutil.rmtree(staging, ignore_errors=True)
  reason = (f"its probabilities differ from TensorFlow's by up to "
            f"{difference:.1e} on {len(compared)} validation reviews (at most "
            f"{max_probability_difference:.0e} allowed)")
  progress(f"float32 copy: not offered: {reason}; scoring keeps TensorFlow")
  return contract.Float32Copy(offered=False, files_sha256={}, reason=reason,
                              **record), None
