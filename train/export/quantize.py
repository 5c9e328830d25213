"""The int8 copy: an exported model's float32 classifier in dynamic int8 for
ONNX Runtime, guarded.

The float32 classify signature is converted to ONNX and quantized by ONNX
Runtime (`engines.onnx_export`: int8 weights in a 7-bit range per channel,
activations per batch, so nothing to calibrate and the same integer sums on
every x86 CPU). The copy is offered only when, on the same held-out reviews,
its accuracy is within `max_accuracy_drop` of float32's (the float32 graph
before quantization, which matches TensorFlow's within float32 rounding).
Whatever fails, the model directory is left as it was: the copy is staged
beside it and installed by `train.export.copies`.
"""
import pathlib
import shutil
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from engines import onnx_classifier as engine
from engines import onnx_export
from evaluation.metrics import decisions
from runtime.filesystems import sha256_of
from schemas import model_dir as contract
from train.loops.trainer import TokenizedReviews, predict_logits

# The float32 graph the copy is quantized from, staged beside it, never kept.
FLOAT32_GRAPH = "classify_tokens_float32.onnx"


class QuantizationError(Exception):
  """The copy could not be made (conversion or quantization failed): the
  model is still complete, in its exported precisions."""


def staging_dir(model_dir) -> pathlib.Path:
  return pathlib.Path(model_dir) / (contract.INT8_COPY_DIR + ".partial")


def _logits(classifier: engine.Classifier, reviews: TokenizedReviews,
            progress, what: str) -> np.ndarray:
  def logits_fn(word_ids, mask):
    return classifier.classify(word_ids, mask)[contract.OUTPUT_LOGITS]
  return predict_logits(logits_fn, reviews, progress=progress, what=what)


def _longest(reviews: TokenizedReviews, count: int):
  """(ids, mask) of the `count` longest reviews, padded to the longest."""
  rows = np.argsort(-reviews.lengths, kind="stable")[:count]
  width = int(reviews.lengths[rows].max())
  ids = reviews.word_ids[rows, :width]
  return ids, (np.arange(width)[None, :] < reviews.lengths[rows, None]
               ).astype(np.int32)


# Reviews on which the fused graph's logits are compared with TensorFlow's
# before it is used (the longest: where float32 sums run longest).
PROBE_REVIEWS = 32


def make_int8_copy(model_dir, *, module, float32_signature: str,
                   guard: TokenizedReviews, guard_source: str,
                   threshold: Optional[float], architecture=None,
                   max_accuracy_drop: float = contract.INT8_MAX_ACCURACY_DROP,
                   progress: Callable[[str], None] = print
                   ) -> Tuple[contract.Int8Copy, Dict[str, Dict],
                              Optional[pathlib.Path]]:
  """Quantizes `module.signatures[float32_signature]` (the loaded
  DIR/saved_model) into DIR/int8.partial/ and guards it on `guard`.

  `architecture` (`engines.onnx_bert.Architecture`): write the graph fused
  where the model is on our BERT backbone.

  Returns the card's record of the copy, its accuracy as the card's
  `accuracy_by_precision` lists it (int8 -> runtime and accuracies), and
  the staged folder to install (None where the guard refused the copy).
  QuantizationError, with nothing left behind, where any step fails.
  """
  staging = staging_dir(model_dir)
  shutil.rmtree(staging, ignore_errors=True)
  try:
    runtime = f"{engine.RUNTIME_NAME} {engine.version()}"
    progress(f"int8: converting the float32 classifier to ONNX and quantizing "
             f"it (ONNX Runtime, dynamic int8, 7-bit weights); guard on "
             f"{len(guard):,} held-out reviews")
    staging.mkdir(parents=True)
    float32_graph = staging / FLOAT32_GRAPH
    graph = onnx_export.convert_signature(
        module, float32_signature, str(float32_graph),
        architecture=architecture, probe=_longest(guard, PROBE_REVIEWS))
    int8_graph = staging / contract.INT8_ONNX_FILE
    onnx_export.quantize(str(float32_graph), str(int8_graph))
    float32_logits = _logits(engine.Classifier(str(float32_graph)), guard,
                             progress, "float32 (ONNX) on the guard's reviews")
    int8_logits = _logits(engine.Classifier(str(int8_graph)), guard,
                          progress, "int8 on the guard's reviews")
    float32_graph.unlink()
    files = {contract.INT8_ONNX_FILE: sha256_of(str(int8_graph))}
  except Exception as e:  # tf2onnx's, onnx's and ONNX Runtime's errors
    shutil.rmtree(staging, ignore_errors=True)
    raise QuantizationError(f"{type(e).__name__}: {e}") from e
  float32_decided = decisions(float32_logits, threshold)
  int8_decided = decisions(int8_logits, threshold)
  labels = _hard_labels(guard.labels)
  float32_accuracy = float(np.mean(float32_decided == labels))
  int8_accuracy = float(np.mean(int8_decided == labels))
  differing = int(np.sum(float32_decided != int8_decided))
  drop = float32_accuracy - int8_accuracy
  offered = drop <= max_accuracy_drop + 1e-12
  record = dict(
      runtime=runtime, quantizer=onnx_export.describe_quantization(graph),
      compared_reviews=len(guard), compared_on=guard_source,
      accuracy=int8_accuracy, float32_accuracy=float32_accuracy,
      decisions_differing=differing, max_accuracy_drop=max_accuracy_drop)
  measured = {contract.INT8: {
      "runtime": runtime, "held_out_reviews": len(guard),
      "held_out_accuracy": int8_accuracy,
      "float32_held_out_accuracy": float32_accuracy}}
  summary = (f"accuracy {int8_accuracy:.4f} against float32's "
             f"{float32_accuracy:.4f} on the same {len(guard):,} held-out "
             f"reviews, {differing} decisions differ")
  if offered:
    progress(f"int8: offered ({summary})")
    return contract.Int8Copy(offered=True, files_sha256=files,
                             **record), measured, staging
  shutil.rmtree(staging, ignore_errors=True)
  reason = (f"{summary}: {drop * 100:.2f} points below float32 (at most "
            f"{max_accuracy_drop * 100:.2f} allowed)")
  progress(f"int8: not offered: {reason}; scoring keeps float32")
  return contract.Int8Copy(offered=False, files_sha256={}, reason=reason,
                           **record), measured, None


def _hard_labels(labels: np.ndarray) -> np.ndarray:
  """Class ids; soft (pseudo-label) targets count by their side of 0.5."""
  labels = np.asarray(labels)
  return (labels >= 0.5).astype(np.int64) if labels.dtype.kind == "f" \
      else labels.astype(np.int64)
