"""Dropout whose masks are a function of (run seed, optimizer step, layer).

Keras' Dropout draws from an op-level random stream that restarts in a new
process, so a run resumed from a checkpoint would draw other masks than the
unbroken run: an equally good run, not the same one. Inside a training
step keyed with `keyed_by(seed, step)`, SeededDropout draws its masks from a
stateless generator keyed by the run's seed and the optimizer's step (which
the checkpoint holds), folded with the layer's salt, so a resumed run
repeats the unbroken one step for step. The key is a tensor of the step's
own graph, not a variable: checkpoints and exported models are unchanged,
and anywhere else (export traces, a TF Hub layer's own training) the layer
is Keras' Dropout.
"""
import contextlib
import threading
import zlib

import tensorflow as tf
import tf_keras

_KEYS = threading.local()


def _stack() -> list:
  if not hasattr(_KEYS, "stack"):
    _KEYS.stack = []
  return _KEYS.stack


@contextlib.contextmanager
def keyed_by(seed: int, step):
  """Key every SeededDropout called in this block by (seed, step)."""
  _stack().append(tf.stack([tf.constant(seed, tf.int64),
                            tf.cast(step, tf.int64)]))
  try:
    yield
  finally:
    _stack().pop()


class SeededDropout(tf_keras.layers.Dropout):
  """tf_keras Dropout with masks drawn from (step key, salt) when keyed.

  `salt` names the layer's place in the model ("transformer_layer_3/ffn"):
  two layers, or two calls, with one salt would drop the same units.
  """

  def __init__(self, rate, *, salt: str, **kwargs):
    super().__init__(rate, **kwargs)
    self.salt = salt
    self._salt_int = zlib.crc32(salt.encode()) & 0x7FFFFFFF

  def call(self, inputs, training=None):
    if not _stack():
      return super().call(inputs, training=training)
    if training is None:
      training = tf_keras.backend.learning_phase()
    if isinstance(training, (bool, int)):
      if not training or self.rate == 0:
        return tf.identity(inputs)
      return self._drop(inputs)
    return tf.cond(tf.cast(training, tf.bool), lambda: self._drop(inputs),
                   lambda: tf.identity(inputs))

  def _drop(self, inputs):
    seed = tf.random.experimental.stateless_fold_in(_stack()[-1],
                                                    self._salt_int)
    return tf.nn.experimental.stateless_dropout(
        inputs, rate=self.rate, seed=seed,
        noise_shape=self._get_noise_shape(inputs))

  def get_config(self):
    return {**super().get_config(), "salt": self.salt}
