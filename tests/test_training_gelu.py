"""The GELU the training step differentiates: the exact GELU, x·Φ(x), with
its derivative Φ(x) + x·φ(x) written out (train/model/bert_backbone.py)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from train.model import bert_backbone


def _exact(x: np.ndarray):
  """GELU and its derivative from Python's own erf and exp (double)."""
  cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
  density = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
  return x * cdf, cdf + x * density


def _value_and_gradient(activation, x):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = activation(x)
  return (tf.cast(y, tf.float64).numpy(),
          tf.cast(tape.gradient(y, x), tf.float64).numpy())


@pytest.mark.parametrize("dtype, tolerance", [(tf.float64, 1e-8),
                                              (tf.float32, 2e-6),
                                              (tf.bfloat16, 2e-2)])
def test_training_gelu_is_the_exact_gelu_and_its_derivative(dtype, tolerance):
  """Catches: a wrong derivative (a sign, a lost x·φ(x) term, the tanh
  approximation's slope) or another function than scoring's, in each dtype
  training runs in; TensorFlow's own float64 erf is good to about 1e-8."""
  x = tf.cast(tf.constant(np.linspace(-8.0, 8.0, 4001)), dtype)
  at_x = tf.cast(x, tf.float64).numpy()  # the inputs as this dtype holds them
  want_value, want_gradient = _exact(at_x)
  value, gradient = _value_and_gradient(bert_backbone._gelu_for_training, x)
  np.testing.assert_array_less(np.abs(value - want_value) / (1 + np.abs(at_x)),
                               tolerance)
  np.testing.assert_array_less(np.abs(gradient - want_gradient), tolerance)
  if dtype != tf.bfloat16:  # bfloat16 rounds finer differences away
    # The tanh approximation's slope is off by more than the tolerance.
    _, tanh_gradient = _value_and_gradient(
        lambda v: tf.nn.gelu(v, approximate=True), tf.constant(at_x))
    assert np.abs(tanh_gradient - want_gradient).max() > 100 * tolerance


def test_only_training_takes_the_written_out_gradient():
  """Catches: scoring graphs built with the custom-gradient GELU (whose
  ops grappler does not fuse with the matmul before it), or training with
  the stock one."""
  assert bert_backbone._TRAINING_ACTIVATIONS["gelu"] is \
      bert_backbone._gelu_for_training
  assert bert_backbone._ACTIVATIONS["gelu"] is bert_backbone._gelu
