"""The int8 copy: post-training quantization of an exported model, guarded.

The float32 classify signature is converted to OpenVINO and quantized by
NNCF, its activation ranges calibrated on training reviews only. The copy is
offered (written into the model directory and listed in the card) only when
its validation accuracy is within `max_accuracy_drop` of float32's on the
same reviews; otherwise its files are removed and the card says why.
"""
import pathlib
import shutil
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from engines import openvino_classifier as engine
from engines import openvino_quantize as quantizer
from runtime.hardware import FLOAT32
from schemas import model_dir as contract
from train.loops.trainer import TokenizedReviews, predict_logits

# Training reviews that set the activation ranges (NNCF's default subset
# size).
CALIBRATION_REVIEWS = 300


class QuantizationError(Exception):
  """The copy could not be made (conversion or quantization failed): the
  model is still complete, in its exported precisions."""


def calibration_rows(train: TokenizedReviews, count: int, seed: int
                     ) -> np.ndarray:
  """`count` training rows, a fixed function of (the split, seed)."""
  rng = np.random.default_rng([seed, 8])
  count = min(count, len(train))
  return np.sort(rng.choice(len(train), size=count, replace=False))


def calibrate_and_quantize(saved_model: str, signature: str,
                           train: TokenizedReviews, out_xml: str, *, seed: int,
                           reviews: int = CALIBRATION_REVIEWS) -> Dict:
  """Writes the quantized copy to `out_xml` (+ .bin); returns the record of
  its calibration: which training reviews, as a digest of their token ids."""
  import hashlib
  rows = calibration_rows(train, reviews, seed)
  token_ids = [train.word_ids[row, :int(train.lengths[row])] for row in rows]
  digest = hashlib.sha256()
  for ids in token_ids:
    digest.update(np.ascontiguousarray(ids, np.int32).tobytes())
    digest.update(b"|")
  quantizer.quantize(saved_model, signature, token_ids, out_xml)
  return {"split": "train", "reviews": len(token_ids), "seed": seed,
          "token_ids_sha256": digest.hexdigest()}


def _accuracy(logits: np.ndarray, labels: np.ndarray, threshold) -> float:
  """Accuracy of the model's decisions (its threshold, or the likeliest
  class); soft targets count by their side of 0.5."""
  labels = np.asarray(labels)
  if logits.ndim == 1:
    predicted = 1.0 / (1.0 + np.exp(-logits)) >= threshold
    truth = labels >= 0.5 if labels.dtype.kind == "f" else labels == 1
    return float(np.mean(predicted == truth))
  return float(np.mean(logits.argmax(axis=1) == labels))


def _logits_of(classifier: "engine.Classifier"):
  def logits_fn(word_ids, mask):
    return classifier.classify(word_ids, mask)[contract.OUTPUT_LOGITS]
  return logits_fn


def make_int8_copy(model_dir, *, float32_signature: str,
                   train: TokenizedReviews, validation: TokenizedReviews,
                   test: Optional[TokenizedReviews],
                   threshold: Optional[float], seed: int,
                   float32_accuracy: Optional[Dict[str, float]] = None,
                   max_accuracy_drop: float = contract.INT8_MAX_ACCURACY_DROP,
                   calibration_reviews: int = CALIBRATION_REVIEWS,
                   progress: Callable[[str], None] = print
                   ) -> Tuple[contract.Int8Copy, Dict[str, Dict]]:
  """Quantizes DIR/saved_model's `float32_signature` into DIR/int8/.

  Returns the card's record of the copy and the accuracy of each engine it
  measured (precision -> runtime and accuracies). `float32_accuracy`
  ({"validation": .., "test": ..}) is float32's as training measured it in
  TensorFlow; without it float32 is measured here in OpenVINO.
  """
  model_dir = pathlib.Path(model_dir)
  saved_model = model_dir / contract.SAVED_MODEL_DIR
  copy_dir = model_dir / contract.INT8_COPY_DIR
  staging = model_dir / (contract.INT8_COPY_DIR + ".partial")
  shutil.rmtree(staging, ignore_errors=True)
  runtime = f"{engine.RUNTIME_NAME} {engine.version()}"
  progress("int8: quantizing the float32 classifier (OpenVINO, NNCF) on "
           f"{min(calibration_reviews, len(train))} training reviews")
  measured = {}
  splits = {"validation": validation, **({"test": test} if test else {})}
  staging.mkdir(parents=True)
  try:
    calibration = calibrate_and_quantize(
        str(saved_model), float32_signature, train,
        str(staging / contract.INT8_MODEL_FILE), seed=seed,
        reviews=calibration_reviews)
  except Exception as e:  # OpenVINO's and NNCF's errors have no common base
    shutil.rmtree(staging, ignore_errors=True)
    raise QuantizationError(f"quantization failed: {type(e).__name__}: {e}"
                            ) from e
  if float32_accuracy is None:
    reference = engine.Classifier(engine.convert_signature(
        str(saved_model), float32_signature))
    float32_accuracy = {
        name: _accuracy(predict_logits(_logits_of(reference), split),
                        split.labels, threshold)
        for name, split in splits.items()}
    measured[FLOAT32] = {"runtime": f"{runtime}, float32",
                         **_as_accuracies(float32_accuracy)}
  int8 = engine.Classifier(str(staging / contract.INT8_MODEL_FILE))
  int8_accuracy = {
      name: _accuracy(predict_logits(_logits_of(int8), split,
                                     progress=progress,
                                     what=f"int8 on the {name} split"),
                      split.labels, threshold)
      for name, split in splits.items()}
  measured[contract.INT8] = {"runtime": runtime,
                             **_as_accuracies(int8_accuracy)}
  drop = float32_accuracy["validation"] - int8_accuracy["validation"]
  offered = drop <= max_accuracy_drop + 1e-12
  record = dict(
      runtime=runtime,
      quantizer=f"{quantizer.quantizer_version()}, post-training, "
                f"{quantizer.MODEL_TYPE.lower()} preset",
      calibration=calibration,
      validation_accuracy=int8_accuracy["validation"],
      float32_validation_accuracy=float32_accuracy["validation"],
      max_accuracy_drop=max_accuracy_drop)
  if offered:
    files = {name: engine.sha256_of(str(staging / name))
             for name in contract.INT8_FILES}
    shutil.rmtree(copy_dir, ignore_errors=True)
    staging.rename(copy_dir)
    progress(f"int8: offered (validation accuracy "
             f"{int8_accuracy['validation']:.4f} against float32's "
             f"{float32_accuracy['validation']:.4f})")
    return contract.Int8Copy(offered=True, files_sha256=files,
                             **record), measured
  shutil.rmtree(staging, ignore_errors=True)
  shutil.rmtree(copy_dir, ignore_errors=True)
  reason = (f"its validation accuracy {int8_accuracy['validation']:.4f} is "
            f"{drop * 100:.2f} points below float32's "
            f"{float32_accuracy['validation']:.4f} (at most "
            f"{max_accuracy_drop * 100:.2f} allowed)")
  progress(f"int8: not offered: {reason}; scoring keeps float32")
  return contract.Int8Copy(offered=False, files_sha256={}, reason=reason,
                           **record), measured


def _as_accuracies(by_split: Dict[str, float]) -> Dict[str, float]:
  return {f"{name}_accuracy": value for name, value in by_split.items()}
