"""The bfloat16 scoring path: fused kernels and bfloat16 weights, checked
against the float32 model it stands in for (tiny real BERT, no mocks)."""
import numpy as np
import pytest

import tensorflow as tf

from train.model.bert_backbone import LayerNorm
from train.model.classifier import build_classifier
from train.encoders.source import resolve_encoder

EPSILON = 1e-12


def _layer_norm(gamma, beta):
  layer = LayerNorm(EPSILON, dtype="mixed_bfloat16")
  layer(tf.zeros([1, gamma.size], tf.bfloat16))  # builds it
  layer.gamma.assign(gamma)
  layer.beta.assign(beta)
  return layer


def test_fused_layer_norm_matches_float64_and_keeps_berts_epsilon():
  rng = np.random.default_rng(0)
  width = 48
  gamma = (1 + 0.2 * rng.standard_normal(width)).astype(np.float32)
  beta = (0.2 * rng.standard_normal(width)).astype(np.float32)
  rows = rng.standard_normal([64, width]) * rng.uniform(0.05, 4, [64, 1])
  # A row of near-constant activations (variance 2**-28, exact in
  # bfloat16): epsilon 1e-12 keeps its normalised values at ±1, the 1e-5
  # floor of tf.nn.fused_batch_norm would shrink them about fiftyfold.
  rows[0] = 2 ** -14 * rng.choice([-1.0, 1.0], width)
  x = tf.cast(tf.constant(rows, tf.float32), tf.bfloat16)
  layer = _layer_norm(gamma, beta)

  exact = tf.cast(x, tf.float64).numpy()
  mean = exact.mean(-1, keepdims=True)
  expected = (exact - mean) / np.sqrt(exact.var(-1, keepdims=True) + EPSILON)
  expected = expected * gamma + beta

  for inputs in (x, tf.reshape(x, [8, 8, width])):  # as in blocks / embeddings
    fused = layer(inputs, fused=True)
    assert fused.dtype == tf.bfloat16 and fused.shape == inputs.shape
    fused = tf.reshape(tf.cast(fused, tf.float64), [64, width]).numpy()
    # bfloat16 keeps 8 bits: outputs up to about 4 round by up to 1/64.
    np.testing.assert_allclose(fused, expected, rtol=0, atol=0.05)
    assert np.abs(fused - expected).mean() < 0.005
  unfused = tf.cast(layer(x), tf.float64).numpy()
  np.testing.assert_allclose(unfused, expected, rtol=0, atol=0.05)
  # The epsilon was kept: the near-constant row still spans ±gamma.
  # (With a 1e-5 epsilon it would span about ±gamma / 50.)
  np.testing.assert_allclose(np.abs(fused[0] - beta), np.abs(gamma),
                             rtol=0, atol=0.1)


def test_bfloat16_scoring_model_scores_as_the_mixed_and_float32_ones(
    tiny_encoder_dir):
  source = resolve_encoder(str(tiny_encoder_dir))
  mixed = build_classifier(source, precision="bfloat16", pooling="mean")
  full = build_classifier(source, precision="float32", pooling="mean",
                          restore_encoder=False)
  scoring = build_classifier(source, precision="bfloat16", pooling="mean",
                             restore_encoder=False, scoring_weights=True)
  head = mixed.get_layer("classifier")
  head.set_weights([np.linspace(-1, 1, head.kernel.shape[0])[:, None]
                    .astype(np.float32), np.zeros([1], np.float32)])
  full.set_weights(mixed.get_weights())
  scoring.set_weights(mixed.get_weights())

  kernels = [v for v in scoring.get_layer("encoder").weights
             if v.name.endswith("kernel:0")]
  assert kernels and all(v.dtype == tf.bfloat16 for v in kernels)
  norms_and_tables = [v for v in scoring.get_layer("encoder").weights
                      if "embeddings" in v.name or "norm" in v.name]
  assert norms_and_tables and all(v.dtype == tf.float32
                                  for v in norms_and_tables)

  rng = np.random.default_rng(3)
  lengths = rng.integers(3, 65, 16)
  mask = (np.arange(64)[None] < lengths[:, None]).astype(np.int32)
  inputs = {"input_word_ids": rng.integers(1, 98, [16, 64]).astype(np.int32)
                              * mask,
            "input_mask": mask,
            "input_type_ids": np.zeros([16, 64], np.int32)}
  inputs = {k: tf.constant(v) for k, v in inputs.items()}
  scoring_fn = tf.function(lambda x: scoring(x, training=False))
  mixed_fn = tf.function(lambda x: mixed(x, training=False))
  logits = scoring_fn(inputs).numpy()
  # Weights stored in bfloat16 are the values the mixed policy casts to.
  np.testing.assert_array_equal(logits, mixed_fn(inputs).numpy())
  reference = full(inputs, training=False).numpy()
  assert reference.std() > 0.1  # scores differ between reviews
  np.testing.assert_allclose(logits, reference, rtol=0,
                             atol=0.05 * np.abs(reference).max())
  # Padding stays invisible: one review alone, cut to its length, scores
  # the same as in the padded batch.
  n = int(lengths[0])
  alone = scoring_fn({k: v[:1, :n] for k, v in inputs.items()}).numpy()
  np.testing.assert_allclose(alone, logits[:1], rtol=0,
                             atol=0.02 * np.abs(reference).max())


def test_scoring_weights_need_bfloat16(tiny_encoder_dir):
  source = resolve_encoder(str(tiny_encoder_dir))
  with pytest.raises(ValueError, match="bfloat16"):
    build_classifier(source, precision="float32", scoring_weights=True)
