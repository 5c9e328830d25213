"""Dropout masks keyed by (seed, step, layer): train/model/seeded_dropout.py.

The resume tests (test_train, test_train_faults, test_pretrain) show that a
resumed run repeats an unbroken one with dropout on; this pins the key's
parts, each of which a broken key could lose.
"""
import numpy as np
import tensorflow as tf

import train  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from train.model.seeded_dropout import SeededDropout, keyed_by


def _mask(layer, seed, step):
  ones = np.ones([64, 32], np.float32)
  with keyed_by(seed, step):
    return layer(ones, training=True).numpy() != 0


def test_masks_are_a_function_of_seed_step_and_salt():
  layer = SeededDropout(0.5, salt="transformer_layer_0/ffn")
  twin = SeededDropout(0.5, salt="transformer_layer_0/ffn")
  other = SeededDropout(0.5, salt="transformer_layer_1/ffn")
  mask = _mask(layer, 42, 7)
  assert 0.4 < mask.mean() < 0.6  # it drops, at about its rate
  assert (_mask(layer, 42, 7) == mask).all()  # the same key, the same mask
  assert (_mask(twin, 42, 7) == mask).all()  # across layer objects (processes)
  assert (_mask(layer, 42, 8) != mask).any()  # each step its own
  assert (_mask(layer, 43, 7) != mask).any()  # each seed its own
  assert (_mask(other, 42, 7) != mask).any()  # each place its own


def test_outside_a_keyed_step_it_is_keras_dropout():
  layer = SeededDropout(0.5, salt="head")
  ones = np.ones([64, 32], np.float32)
  assert (layer(ones, training=False).numpy() == ones).all()
  dropped = layer(ones, training=True).numpy()
  assert (dropped == 0).any() and np.allclose(dropped[dropped != 0], 2.0)


def test_the_rate_holds_in_bfloat16_and_kept_units_are_scaled():
  """Catches: masks drawn as bfloat16 floats, whose 1/128 steps dropped
  13/128 = 10.16% at rate 0.1; a mask broadcast wrongly over the units; kept
  units not scaled by 1 / (1 - rate)."""
  layer = SeededDropout(0.1, salt="transformer_layer_0/attention",
                        dtype="mixed_bfloat16")
  ones = tf.ones([16, 12, 128, 128], tf.bfloat16)
  with keyed_by(42, 3):
    dropped = layer(ones, training=True).numpy().astype(np.float32)
  # 3,145,728 units: 4 standard deviations of the dropped fraction is
  # 0.0007, and 13/128 is 9 of them away.
  assert abs((dropped == 0).mean() - 0.1) < 0.0007
  assert np.allclose(dropped[dropped != 0], np.float32(tf.cast(1 / 0.9, tf.bfloat16)))
  assert len({tuple(np.flatnonzero(dropped[0, h, 0] == 0)) for h in range(12)}) == 12
