"""The masked-language-model head on the BERT backbone (pre-training)."""
import tensorflow as tf
import tf_keras

from train.model.bert_backbone import BertBackbone, LayerNorm


class MaskedLanguageModel(tf_keras.Model):
  """Backbone → wordpieces at chosen positions → vocabulary logits.

  BERT's prediction head: dense + GELU + layer norm, then the word embedding
  matrix (tied) and a bias per wordpiece. Checkpoints such as
  all-MiniLM-L6-v2 ship without a head, so it starts from scratch.
  """

  def __init__(self, backbone: BertBackbone, **kwargs):
    super().__init__(**kwargs)
    config = backbone.config
    self.backbone = backbone
    self.transform = tf_keras.layers.Dense(
        config.hidden_size, activation="gelu", name="mlm_transform",
        kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02),
        dtype=backbone.dtype_policy)
    self.transform_norm = LayerNorm(config.layer_norm_eps, name="mlm_layer_norm",
                                    dtype=backbone.dtype_policy)
    self.output_bias = self.add_weight(
        "mlm_output_bias", [config.vocab_size], initializer="zeros")

  def head_variables(self):
    """The prediction head's own variables (not the tied embeddings)."""
    return (self.transform.trainable_variables +
            self.transform_norm.trainable_variables + [self.output_bias])

  def call(self, inputs, positions, training=False):
    sequence = self.backbone(inputs, training=training)["sequence_output"]
    chosen = tf.gather(sequence, positions, batch_dims=1)
    hidden = self.transform_norm(self.transform(chosen))
    logits = tf.matmul(hidden, tf.cast(self.backbone.word_embeddings,
                                       hidden.dtype), transpose_b=True)
    return tf.cast(logits, tf.float32) + self.output_bias
