"""A BERT encoder as a Keras 2 (tf-keras) layer.

Numerically it is Hugging Face's `BertModel` (post-layer-norm transformer,
exact erf GELU, tanh pooler on [CLS]); its weights are named after TF Hub's
BERT encoders' roles. It honours the Keras mixed-precision policy: matmuls run
in the compute dtype (bfloat16 on CPUs with AVX-512 BF16) while layer norms and
the attention softmax stay in float32. Scoring in bfloat16 (training=False)
takes a faster graph of the same arithmetic: layer norms and attention scores
as single fused oneDNN kernels that accumulate in float32, softmax on
bfloat16 scores; benchmarks/throughput.py measures it against float32.
"""
import math
from typing import Dict

import tensorflow as tf
import tf_keras

from train.model.bert_config import BertConfig
from train.model.seeded_dropout import SeededDropout

_MASKED_SCORE = -1e9


def _gelu(x):
  return tf.nn.gelu(x, approximate=False)


@tf.custom_gradient
def _gelu_for_training(x):
  """Exact GELU, x·Φ(x), with its derivative Φ(x) + x·φ(x) written out.

  The same function as `_gelu`; autodiff of tf.nn.gelu chains a gradient
  through each of its elementwise ops over the [tokens, intermediate]
  activations, where this takes Φ(x) kept from the forward pass and one
  exponential: the mixed-bfloat16 training step is markedly faster
  (benchmarks/results/code_choices.md). Scoring keeps `_gelu`, whose graph
  grappler fuses with the matmul before it.
  """
  cdf = 0.5 * (1.0 + tf.math.erf(x * tf.cast(1 / math.sqrt(2), x.dtype)))

  def gradient(upstream):
    density = tf.exp(-0.5 * tf.square(x)) * tf.cast(
        1 / math.sqrt(2 * math.pi), x.dtype)
    return upstream * (cdf + x * density)

  return x * cdf, gradient


def _gelu_tanh(x):
  return tf.nn.gelu(x, approximate=True)


_ACTIVATIONS = {"gelu": _gelu, "gelu_new": _gelu_tanh, "relu": tf.nn.relu}
# Where training takes another implementation of the same function.
_TRAINING_ACTIVATIONS = {"gelu": _gelu_for_training}


def _scoring(training) -> bool:
  """Inference, as a Python decision. `training` may be a tensor in some
  Keras call paths: those take the training-safe graph."""
  return training is None or training is False


class LayerNorm(tf_keras.layers.Layer):
  """Layer normalisation computed in float32 whatever the compute dtype."""

  def __init__(self, epsilon: float, **kwargs):
    super().__init__(**kwargs)
    self.epsilon = epsilon

  def build(self, input_shape):
    width = input_shape[-1]
    # Read in float32, not rounded to the bfloat16 compute dtype.
    self.gamma = self.add_weight("gamma", [width], initializer="ones",
                                 experimental_autocast=False)
    self.beta = self.add_weight("beta", [width], initializer="zeros",
                                experimental_autocast=False)

  def call(self, x, fused=False):
    """x: [..., width]. `fused` (bfloat16 scoring only) takes one oneDNN op."""
    if fused and self.compute_dtype == "bfloat16":
      return self._fused_bfloat16(x)
    x32 = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
    normed = (x32 - mean) * tf.math.rsqrt(variance + self.epsilon)
    return tf.cast(normed * self.gamma + self.beta, self.compute_dtype)

  def _fused_bfloat16(self, x):
    """The same normalisation, written so grappler makes it one _MklLayerNorm.

    The unfused float32 form above is about nine passes over the
    activations (two casts, two means, centring, scaling, gamma, beta):
    on the 2-core Zen 4 it took 8.0 ms per [16384, 384] bfloat16 tensor
    where the fused kernel takes 1.0 (benchmarks/scoring_kernels.py).
    Grappler's remapper fuses
    exactly Keras' fused-LayerNorm graph: the rows as the channels of an
    NCHW FusedBatchNormV3 in training mode (per-row statistics, which
    oneDNN accumulates in float32), then * gamma + beta. The raw op keeps
    BERT's epsilon of 1e-12, which tf.nn.fused_batch_norm would raise to
    1e-5. Without oneDNN the same graph still runs (Eigen's
    FusedBatchNormV3), unfused. Costs gamma and beta rounded to bfloat16:
    mean |error| 0.0016 against 0.0011 for the float32 form (unit-variance
    rows), the size of the bfloat16 rounding of the output itself.
    """
    normed = self.normalized_rows(x)
    return normed * tf.cast(self.gamma, x.dtype) + tf.cast(self.beta, x.dtype)

  def normalized_rows(self, x):
    """(x - mean) / sqrt(variance + epsilon) of each row, in x's dtype, as
    one FusedBatchNormV3: the rows as the channels of an NCHW batch norm in
    training mode (per-row statistics, accumulated in float32)."""
    width = x.shape[-1]
    rows = tf.size(x) // width
    empty = tf.constant([], tf.float32)
    normed = tf.raw_ops.FusedBatchNormV3(
        x=tf.reshape(x, [1, rows, width, 1]), scale=tf.fill([rows], 1.0),
        offset=tf.fill([rows], 0.0), mean=empty, variance=empty,
        epsilon=self.epsilon, data_format="NCHW", is_training=True)[0]
    return tf.reshape(normed, tf.shape(x))


class TransformerBlock(tf_keras.layers.Layer):
  """Self-attention and feed-forward, each with residual and post layer norm."""

  def __init__(self, config: BertConfig, *, dense_dtype=None, **kwargs):
    super().__init__(**kwargs)
    self.config = config
    h = config.hidden_size
    self.head_size = h // config.num_heads
    dense = lambda units, name: tf_keras.layers.Dense(
        units, name=name, dtype=dense_dtype or self.dtype_policy)
    self.query = dense(h, "query")
    self.key = dense(h, "key")
    self.value = dense(h, "value")
    self.attention_output = dense(h, "attention_output")
    self.attention_norm = LayerNorm(config.layer_norm_eps,
                                    name="attention_layer_norm",
                                    dtype=self.dtype_policy)
    self.intermediate = dense(config.intermediate_size, "intermediate")
    self.output_dense = dense(h, "output")
    self.output_norm = LayerNorm(config.layer_norm_eps, name="output_layer_norm",
                                 dtype=self.dtype_policy)
    self.activation = _ACTIVATIONS[config.hidden_act]
    self.training_activation = _TRAINING_ACTIVATIONS.get(config.hidden_act,
                                                         self.activation)
    # Dropouts share the block's policy so that they do not cast bfloat16
    # activations back to float32 between matmuls; one layer per place, so
    # that each draws its own masks.
    dropout = lambda rate, place: SeededDropout(
        rate, salt=f"{self.name}/{place}", dtype=self.dtype_policy)
    self.attention_dropout = dropout(config.attention_dropout, "attention")
    self.attended_dropout = dropout(config.hidden_dropout, "attended")
    self.ffn_dropout = dropout(config.hidden_dropout, "ffn")

  def _split_heads(self, x, batch, length):
    x = tf.reshape(x, [batch, length, self.config.num_heads, self.head_size])
    return tf.transpose(x, [0, 2, 1, 3])

  def call(self, x, attention_bias, training=False):
    """x: [batch, length, hidden] → the same shape.

    The dense layers run on a 2-D [batch * length, hidden] view: Keras' Dense
    on 3-D inputs goes through tensordot (reshape, MatMul, reshape), which
    hides MatMul + BiasAdd (+ GELU) from grappler's fusion into one oneDNN
    call, which in bfloat16 is the fast one. In float32 the fused oneDNN
    MatMul was the slower one, so float32 keeps the 3-D view. Figures:
    benchmarks/results/code_choices.md.
    """
    batch, length = tf.shape(x)[0], tf.shape(x)[1]
    hidden = self.config.hidden_size
    two_d = self.compute_dtype != "float32"
    mixed_precision_scoring = two_d and _scoring(training)
    flat = tf.reshape(x, [-1, hidden]) if two_d else x
    scale = tf.constant(1.0 / math.sqrt(self.head_size), self.compute_dtype)
    q = self._split_heads(self.query(flat), batch, length)
    k = self._split_heads(self.key(flat), batch, length)
    v = self._split_heads(self.value(flat), batch, length)
    if mixed_precision_scoring:
      # matmul * scalar constant + [batch, 1, 1, length] bias is the graph
      # grappler fuses into one oneDNN batch matmul with two post-ops, so
      # the [batch, heads, length, length] scores are written once, not
      # three times (benchmarks/results/code_choices.md).
      scores = (tf.matmul(q, k, transpose_b=True) * scale +
                tf.cast(attention_bias, self.compute_dtype))
      # TensorFlow's CPU softmax kernel sums in float32 (512 equal logits
      # give exactly 1/512, where a bfloat16 sum would stop at 256), so this
      # differs from the float32 softmax only by the rounding of its output,
      # which the cast to bfloat16 for the next matmul did anyway; and it
      # skips two casts of the largest tensor of the model.
      probs = tf.nn.softmax(scores, axis=-1)
    else:
      # Scaling q ([tokens, hidden]) rather than the scores ([.., length,
      # length]) does the same arithmetic on far fewer elements; softmax in
      # float32, since its gradient's sums would run in bfloat16.
      scores = tf.matmul(q * scale, k, transpose_b=True)
      probs = tf.nn.softmax(tf.cast(scores, tf.float32) + attention_bias,
                            axis=-1)
      probs = tf.cast(probs, self.compute_dtype)
    probs = self.attention_dropout(probs, training=training)
    context = tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3])
    context = tf.reshape(context, [-1, hidden] if two_d else
                         [batch, length, hidden])
    attended = self.attended_dropout(self.attention_output(context),
                                     training=training)
    fused = mixed_precision_scoring
    flat = self.attention_norm(flat + attended, fused=fused)
    activation = (self.activation if _scoring(training) else
                  self.training_activation)
    ffn = self.output_dense(activation(self.intermediate(flat)))
    ffn = self.ffn_dropout(ffn, training=training)
    return tf.reshape(self.output_norm(flat + ffn, fused=fused),
                      [batch, length, hidden])


class BertBackbone(tf_keras.layers.Layer):
  """Maps TF Hub's three BERT inputs to its outputs.

  Inputs: dict of int32 `input_word_ids`, `input_mask`, `input_type_ids`, each
  [batch, seq_len]. Outputs: `sequence_output` [batch, seq_len, hidden],
  `pooled_output` [batch, hidden], `encoder_outputs` (one per block) and
  `default` (= pooled_output), as TF Hub's BERT encoders return them.
  """

  def __init__(self, config: BertConfig, *, dense_dtype=None, **kwargs):
    """`dense_dtype`: a policy for the matmul layers alone, by default the
    backbone's. "bfloat16" under a "mixed_bfloat16" backbone stores their
    weights in bfloat16 for scoring: the same numbers the mixed policy casts
    them to on every call (10.6M weights per batch for MiniLM), while
    embeddings and layer norms stay float32.
    """
    super().__init__(**kwargs)
    self.config = config
    self.dense_dtype = dense_dtype
    self.embedding_norm = LayerNorm(config.layer_norm_eps,
                                    name="embeddings_layer_norm",
                                    dtype=self.dtype_policy)
    self.embedding_dropout = SeededDropout(config.hidden_dropout,
                                           salt=f"{self.name}/embeddings",
                                           dtype=self.dtype_policy)
    self.blocks = [
        TransformerBlock(config, name=f"transformer_layer_{i}",
                         dtype=self.dtype_policy, dense_dtype=dense_dtype)
        for i in range(config.num_layers)
    ]
    self.pooler = tf_keras.layers.Dense(config.hidden_size, activation="tanh",
                                        name="pooler_transform",
                                        dtype=dense_dtype or self.dtype_policy)

  def build(self, input_shape):
    c = self.config
    # Embedding tables are summed in float32 and cast once (no autocast).
    init = lambda: tf_keras.initializers.TruncatedNormal(stddev=0.02)
    self.word_embeddings = self.add_weight(
        "word_embeddings", [c.vocab_size, c.hidden_size], initializer=init(),
        experimental_autocast=False)
    self.position_embeddings = self.add_weight(
        "position_embeddings", [c.max_position_embeddings, c.hidden_size],
        initializer=init(),
        experimental_autocast=False)
    self.type_embeddings = self.add_weight(
        "type_embeddings", [c.type_vocab_size, c.hidden_size], initializer=init(),
        experimental_autocast=False)
    super().build(input_shape)

  def call(self, inputs: Dict[str, tf.Tensor], training=False):
    word_ids = tf.cast(inputs["input_word_ids"], tf.int32)
    mask = tf.cast(inputs["input_mask"], tf.int32)
    type_ids = tf.cast(inputs["input_type_ids"], tf.int32)
    length = tf.shape(word_ids)[1]
    embedded = (tf.gather(self.word_embeddings, word_ids) +
                tf.gather(self.type_embeddings, type_ids) +
                self.position_embeddings[tf.newaxis, :length, :])
    x = self.embedding_norm(tf.cast(embedded, self.compute_dtype),
                            fused=_scoring(training))
    x = self.embedding_dropout(x, training=training)
    # [batch, 1, 1, length]: padding keys get a large negative score.
    attention_bias = (1.0 - tf.cast(mask[:, tf.newaxis, tf.newaxis, :],
                                    tf.float32)) * _MASKED_SCORE
    encoder_outputs = []
    for block in self.blocks:
      x = block(x, attention_bias, training=training)
      encoder_outputs.append(x)
    pooled = self.pooler(x[:, 0, :])
    return {
        "sequence_output": x,
        "pooled_output": pooled,
        "encoder_outputs": encoder_outputs,
        "default": pooled,
    }

  def lowest_layers_variables(self, count: int) -> list:
    """The variables of the lowest `count` layers: the embeddings (tables
    and their layer norm) first, then the transformer blocks upwards."""
    if not 0 <= count <= len(self.blocks) + 1:
      raise ValueError(f"this encoder has {len(self.blocks) + 1} layers "
                       f"(embeddings and {len(self.blocks)} transformer "
                       f"blocks); cannot freeze {count}")
    if count == 0:
      return []
    variables = [self.word_embeddings, self.position_embeddings,
                 self.type_embeddings] + self.embedding_norm.trainable_variables
    for block in self.blocks[:count - 1]:
      variables += block.trainable_variables
    return variables

  def get_config(self):
    config = {**super().get_config(), "config": self.config.to_dict()}
    if self.dense_dtype is not None:
      config["dense_dtype"] = tf_keras.mixed_precision.Policy(
          self.dense_dtype).name
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    bert = BertConfig.from_dict(config.pop("config"))
    return cls(bert, **config)


def dummy_inputs(batch: int = 1, length: int = 8) -> Dict[str, tf.Tensor]:
  """All-zero inputs of the right structure, to build a backbone's weights."""
  zeros = tf.zeros([batch, length], tf.int32)
  return {"input_word_ids": zeros, "input_mask": tf.ones_like(zeros),
          "input_type_ids": zeros}
