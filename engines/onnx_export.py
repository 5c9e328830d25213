"""The int8 copy's graph: a SavedModel's float32 classify signature written
as ONNX (our fused BERT graph, `engines.onnx_bert`, else tf2onnx's
conversion) and quantized by ONNX Runtime (dynamic int8, 7-bit weights per
channel). Training and `optimize` make it; workers only run it
(`engines.onnx_classifier`), so tf2onnx and onnx are imported here alone,
and only when a function is called.

The same SavedModel gives the same numbers (tf2onnx names nodes from
counters and sets, so not always the same bytes: the card's sha256 is the
copy's identity).
"""
import logging
import os
import tempfile
from typing import Optional, Tuple

import numpy as np

from schemas import model_dir as contract


# Opset of the converted graph: ONNX Runtime 1.20+ runs it; Erf (GELU) and
# LayerNormalization's patterns are fused by its graph optimizer.
OPSET = 17
# ONNX Runtime's dynamic quantization: weights int8 per output channel, in
# the 7-bit range (`reduce_range`), activations u8 per batch.
QUANTIZATION = {"per_channel": True, "reduce_range": True,
                "weight_type": "QInt8"}


def converter_version() -> str:
  from importlib import metadata
  return f"tf2onnx {metadata.version('tf2onnx')}"


def describe_quantization(graph: str) -> str:
  """For the card: how the weights and activations were quantized, and
  how the graph was written (`convert_signature`'s answer)."""
  import onnxruntime
  return (f"onnxruntime {onnxruntime.__version__} quantize_dynamic: int8 "
          "weights in a 7-bit range per output channel, activations u8 per "
          f"batch; graph: {graph}")


def _erfc_as_one_minus_erf(ctx, node, _name, _args):
  """TensorFlow writes exact GELU with Erfc, which ONNX lacks: 1 - Erf(x)
  (within float32 rounding of Erfc over GELU's range)."""
  from tf2onnx import utils
  erf = ctx.make_node("Erf", [node.input[0]])
  dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
  one = ctx.make_const(utils.make_name("one"), np.array(1, dtype=dtype))
  node.type = "Sub"
  ctx.replace_inputs(node, [one.output[0], erf.output[0]])
  return node


class _Signature:
  """tf2onnx's `from_function` asks a tf.function for its concrete
  function; a SavedModel's signature already is one."""

  def __init__(self, concrete):
    self._concrete = concrete

  def get_concrete_function(self, *_):
    return self._concrete


def convert_signature(module, signature: str, out_path: str, *,
                      architecture=None,
                      probe: Optional[Tuple[np.ndarray, np.ndarray]] = None
                      ) -> str:
  """Writes `module.signatures[signature]` (`module`: a loaded SavedModel)
  as an ONNX graph whose inputs and outputs carry the signature's names;
  returns how it was written.

  With `architecture` (`onnx_bert.Architecture`), as the fused graph of
  our BERT backbone
  (`engines.onnx_bert`), kept where its logits on `probe` (token ids and
  mask) are TensorFlow's within MAX_LOGIT_DIFFERENCE; otherwise, or where
  the model is not on our backbone, converted by tf2onnx op by op."""
  concrete = module.signatures[signature]
  if architecture is not None:
    from engines import onnx_bert
    try:
      proto = onnx_bert.build(onnx_bert.weights_of(concrete), architecture)
    except onnx_bert.NotOurBackbone:
      proto = None
    if proto is not None:
      import onnx
      onnx.save_model(proto, out_path)
      if probe is None or _largest_difference(concrete, out_path, probe) <= \
          MAX_LOGIT_DIFFERENCE:
        return FUSED
  _convert_op_by_op(concrete, out_path)
  return converter_version()


# The fused graph is kept where its logits are within this of TensorFlow's
# (float32 sums in another order differ by about 1e-6).
MAX_LOGIT_DIFFERENCE = 1e-3
FUSED = "reviewscore's fused BERT graph (onnx_bert)"


def _largest_difference(concrete, path: str, probe) -> float:
  import tensorflow as tf

  from engines.onnx_classifier import Classifier
  ids, mask = probe
  reference = concrete(**{contract.TOKEN_IDS: tf.constant(ids, tf.int32),
                          contract.TOKEN_MASK: tf.constant(mask, tf.int32)})
  ours = Classifier(path).classify(ids, mask)
  return float(np.max(np.abs(
      ours[contract.OUTPUT_LOGITS] -
      reference[contract.OUTPUT_LOGITS].numpy())))


def _convert_op_by_op(concrete, out_path: str) -> None:
  import onnx
  import tensorflow as tf
  import tf2onnx
  proto, _ = tf2onnx.convert.from_function(
      _Signature(concrete), input_signature=[None], opset=OPSET,
      custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])})
  # tf2onnx names outputs after TensorFlow's tensors (Identity:0, ...);
  # the signature's flattened outputs are in the concrete function's order.
  names = dict(zip((t.name for t in concrete.outputs),
                   (spec.name for spec in tf.nest.flatten(
                       concrete.structured_outputs)), strict=True))
  _rename_outputs(proto.graph, names)
  onnx.save_model(proto, out_path)


def _rename_outputs(graph, names) -> None:
  for output in graph.output:
    old = output.name
    new = names.get(old)
    if new is None:
      continue
    for node in graph.node:
      node.output[:] = [new if o == old else o for o in node.output]
      node.input[:] = [new if i == old else i for i in node.input]
    output.name = new


def quantize(float32_onnx: str, out_path: str) -> None:
  """Writes the dynamic-int8 version of a float32 ONNX classify graph."""
  import onnx
  from onnxruntime.quantization import QuantType, quantize_dynamic
  options = dict(QUANTIZATION)
  options["weight_type"] = getattr(QuantType, options["weight_type"])
  with tempfile.TemporaryDirectory(prefix="reviewscore-quantize-") as tmp:
    # Quantized after ONNX Runtime's own basic optimizations (constant
    # folding, redundant casts gone), as the graph it will run.
    optimized = os.path.join(tmp, "optimized.onnx")
    _basic_optimized(float32_onnx, optimized)
    # Its one warning suggests shape inference for static quantization.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
      # The fused contrib operators have no shape inference: their
      # outputs are float32.
      quantize_dynamic(optimized, out_path, **options, extra_options={
          "DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
      root.setLevel(level)


def _basic_optimized(path: str, out_path: str) -> None:
  import onnxruntime as ort
  options = ort.SessionOptions()
  options.graph_optimization_level = (
      ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
  options.optimized_model_filepath = out_path
  options.log_severity_level = 3
  ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

