"""The classify signature of a model on our BERT backbone, written straight
into ONNX Runtime's fused transformer operators from the SavedModel's own
weights.

tf2onnx converts the signature op by op: every layer norm becomes a dozen
elementwise passes and every attention a chain of reshapes, transposes and
batch matmuls, which ONNX Runtime's fusion does not recognise. Written here
from the weights, each block is five operators (`Attention`, `MatMul`,
`SkipLayerNormalization`, `MatMul` + `BiasGelu`, `MatMul`,
`SkipLayerNormalization`) and the embeddings one (`EmbedLayerNormalization`);
dynamic quantization then turns the attention into `QAttention` and every
matmul into int8. The graph is the same function as the signature:
`engines.onnx_export` checks its logits against TensorFlow's before it is
used, and converts with tf2onnx where this does not apply (an encoder from
TF Hub) or does not match.
"""
import dataclasses
from typing import Any, Dict, Optional

import numpy as np

from schemas import model_dir as contract

_MICROSOFT = "com.microsoft"
# Activations of bert_config's hidden_act, as ONNX Runtime's fused ops.
_ACTIVATIONS = {"gelu": "BiasGelu", "gelu_new": "FastGelu"}
_POOLINGS = ("cls", "mean")


class NotOurBackbone(Exception):
  """The signature's weights are not our BertBackbone's: use tf2onnx."""


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What the weights alone do not say: the encoder's configuration (the
  card's `encoder.bert_config`, for encoders imported as our backbone),
  the pooling and the decision threshold."""
  bert_config: Optional[Dict[str, Any]]
  pooling: Optional[str]
  threshold: Optional[float]

  @classmethod
  def of(cls, encoder: Optional[dict], pooling, threshold) -> "Architecture":
    return cls((encoder or {}).get("bert_config"), pooling, threshold)


def weights_of(concrete) -> Dict[str, np.ndarray]:
  """name (without ':0') -> value of every variable a signature reads."""
  return {v.name.split(":")[0]: v.numpy() for v in concrete.variables}


def build(weights: Dict[str, np.ndarray], architecture: Architecture):
  """The onnx.ModelProto of classify_tokens for these weights."""
  import onnx
  from onnx import TensorProto, helper, numpy_helper
  bert_config = architecture.bert_config
  pooling, threshold = architecture.pooling, architecture.threshold
  if not bert_config:
    raise NotOurBackbone("the card records no bert_config (a TF Hub encoder)")
  activation = _ACTIVATIONS.get(bert_config.get("hidden_act"))
  if activation is None or pooling not in _POOLINGS:
    raise NotOurBackbone(f"activation {bert_config.get('hidden_act')!r}, "
                         f"pooling {pooling!r}")
  layers = int(bert_config["num_layers"])
  heads = int(bert_config["num_heads"])
  epsilon = float(bert_config["layer_norm_eps"])

  def weight(name):
    try:
      return np.ascontiguousarray(weights[name], np.float32)
    except KeyError:
      raise NotOurBackbone(f"no weight {name}") from None

  nodes, initializers = [], []

  def const(name, value):
    # np.array keeps a 0-d value a scalar (ascontiguousarray makes it 1-d).
    initializers.append(numpy_helper.from_array(
        np.array(value, order="C"), name))
    return name

  def node(op, inputs, outputs, domain="", **attributes):
    nodes.append(helper.make_node(op, inputs, outputs,
                                  name=f"{op}_{len(nodes)}", domain=domain,
                                  **attributes))
    return outputs[0]

  encoder = "encoder/"
  # Every review is one segment: type 0's embedding is added to every
  # position, so it is folded into the position embeddings.
  positions = (weight(encoder + "position_embeddings") +
               weight(encoder + "type_embeddings")[0])
  x = node("EmbedLayerNormalization", [
      contract.TOKEN_IDS, "", const("word_embeddings",
                                    weight(encoder + "word_embeddings")),
      const("position_embeddings", positions), "",
      const("embeddings_gamma", weight(encoder + "embeddings_layer_norm/gamma")),
      const("embeddings_beta", weight(encoder + "embeddings_layer_norm/beta")),
      contract.TOKEN_MASK], ["embedded", "mask_index"],
      domain=_MICROSOFT, epsilon=epsilon)
  for index in range(layers):
    p = f"{encoder}transformer_layer_{index}/"
    n = f"layer{index}_"
    qkv = np.concatenate([weight(p + f"{part}/kernel")
                          for part in ("query", "key", "value")], axis=1)
    qkv_bias = np.concatenate([weight(p + f"{part}/bias")
                               for part in ("query", "key", "value")])
    attended = node("Attention", [
        x, const(n + "qkv", qkv), const(n + "qkv_bias", qkv_bias),
        "mask_index"], [n + "attended"], domain=_MICROSOFT, num_heads=heads)
    projected = node("MatMul", [attended, const(
        n + "attention_output", weight(p + "attention_output/kernel"))],
        [n + "projected"])
    x1 = node("SkipLayerNormalization", [
        projected, x, const(n + "attention_gamma",
                            weight(p + "attention_layer_norm/gamma")),
        const(n + "attention_beta", weight(p + "attention_layer_norm/beta")),
        const(n + "attention_output_bias", weight(p + "attention_output/bias"))],
        [n + "attention_normed"], domain=_MICROSOFT, epsilon=epsilon)
    inner = node("MatMul", [x1, const(n + "intermediate",
                                      weight(p + "intermediate/kernel"))],
                 [n + "inner"])
    activated = node(activation, [inner, const(
        n + "intermediate_bias", weight(p + "intermediate/bias"))],
        [n + "activated"], domain=_MICROSOFT)
    out = node("MatMul", [activated, const(n + "output",
                                           weight(p + "output/kernel"))],
               [n + "out"])
    x = node("SkipLayerNormalization", [
        out, x1, const(n + "output_gamma", weight(p + "output_layer_norm/gamma")),
        const(n + "output_beta", weight(p + "output_layer_norm/beta")),
        const(n + "output_bias", weight(p + "output/bias"))],
        [n + "output_normed"], domain=_MICROSOFT, epsilon=epsilon)
  axis_1 = const("axis_1", np.array([1], np.int64))
  if pooling == "cls":
    first = node("Gather", [x, const("zero", np.array(0, np.int64))],
                 ["first_token"], axis=1)
    transformed = node("Gemm", [first, const(
        "pooler", weight(encoder + "pooler_transform/kernel")), const(
            "pooler_bias", weight(encoder + "pooler_transform/bias"))],
        ["pooler_transformed"])
    pooled = node("Tanh", [transformed], ["pooled"])
  else:  # the mean over real tokens
    mask = node("Cast", [contract.TOKEN_MASK], ["mask_float"],
                to=TensorProto.FLOAT)
    weights3 = node("Unsqueeze", [mask, const("axis_2", np.array([2], np.int64))],
                    ["mask_3d"])
    total = node("ReduceSum", [node("Mul", [x, weights3], ["masked"]), axis_1],
                 ["token_sum"], keepdims=0)
    count = node("Max", [node("ReduceSum", [mask, axis_1], ["token_count"],
                              keepdims=1), const("one", np.array(1, np.float32))],
                 ["token_count_at_least_1"])
    pooled = node("Div", [total, count], ["pooled"])
  kernel = weight("classifier/kernel")
  logits = node("Gemm", [pooled, const("classifier", kernel),
                         const("classifier_bias", weight("classifier/bias"))],
                ["logits_2d"])
  outputs = []
  if kernel.shape[1] == 1:
    if threshold is None:
      raise NotOurBackbone("one logit but no threshold")
    node("Squeeze", [logits, axis_1], [contract.OUTPUT_LOGITS])
    node("Sigmoid", [contract.OUTPUT_LOGITS], [contract.OUTPUT_PROBABILITY])
    node("Cast", [node("GreaterOrEqual", [contract.OUTPUT_PROBABILITY, const(
        "threshold", np.array(threshold, np.float32))], ["decided"])],
         [contract.OUTPUT_LABEL_ID], to=TensorProto.INT32)
    outputs = [(contract.OUTPUT_LOGITS, [None]),
               (contract.OUTPUT_PROBABILITY, [None]),
               (contract.OUTPUT_LABEL_ID, [None])]
  else:
    node("Identity", [logits], [contract.OUTPUT_LOGITS])
    node("Softmax", [logits], [contract.OUTPUT_PROBABILITIES], axis=-1)
    node("ReduceMax", [contract.OUTPUT_PROBABILITIES, axis_1],
         [contract.OUTPUT_PROBABILITY], keepdims=0)
    node("Cast", [node("ArgMax", [logits], ["likeliest"], axis=1, keepdims=0)],
         [contract.OUTPUT_LABEL_ID], to=TensorProto.INT32)
    outputs = [(contract.OUTPUT_LOGITS, [None, kernel.shape[1]]),
               (contract.OUTPUT_PROBABILITIES, [None, kernel.shape[1]]),
               (contract.OUTPUT_PROBABILITY, [None]),
               (contract.OUTPUT_LABEL_ID, [None])]
  types = {contract.OUTPUT_LABEL_ID: TensorProto.INT32}
  graph = helper.make_graph(
      nodes, contract.CLASSIFY_SIGNATURE,
      [helper.make_tensor_value_info(name, TensorProto.INT32,
                                     ["batch", "length"])
       for name in (contract.TOKEN_IDS, contract.TOKEN_MASK)],
      [helper.make_tensor_value_info(
          name, types.get(name, TensorProto.FLOAT),
          ["batch" if d is None else d for d in shape])
       for name, shape in outputs],
      initializers)
  model = helper.make_model(graph, producer_name="reviewscore", opset_imports=[
      helper.make_opsetid("", 17), helper.make_opsetid(_MICROSOFT, 1)])
  # The IR version of opset 17 (onnx's newest would be ahead of the runtime).
  model.ir_version = 8
  onnx.checker.check_model(model)
  return model
