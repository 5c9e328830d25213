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

Each kept/dropped decision compares 16 random bits with the rate (one
Philox draw of 32 bits decides two units), where TensorFlow's
stateless_dropout draws a whole number per unit and converts it to a float
of the input's type: half the random numbers, and the rate to 1/65,536
rather than in the 1/128 steps of a bfloat16 uniform (rate 0.1 dropped
13/128 = 10.16% of bfloat16 units). Attention dropout draws a decision for
every score of every head, so this is the bulk of a training step's random
numbers (benchmarks/results/code_choices.md). Masks are the same for the
same code: a run checkpointed before this scheme and resumed after it
draws other masks from then on.
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


def _keep_mask(shape, *, rate: float, seed) -> tf.Tensor:
  """A bool tensor of `shape`, each True with probability 1 - rate (to
  1/65,536), drawn from the stateless generator keyed by `seed`."""
  units = tf.reduce_prod(shape)
  words = tf.random.stateless_uniform([(units + 1) // 2], seed=seed,
                                      minval=None, maxval=None, dtype=tf.uint32)
  halves = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:units]
  threshold = tf.constant(min(round(rate * 65536), 65535), tf.uint16)
  return tf.reshape(halves >= threshold, shape)


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
    shape = self._get_noise_shape(inputs)
    shape = tf.shape(inputs) if shape is None else shape
    keep = _keep_mask(shape, rate=self.rate, seed=seed)
    scale = tf.constant(1.0 / (1.0 - self.rate), inputs.dtype)
    return tf.where(keep, inputs * scale, tf.zeros([], inputs.dtype))

  def get_config(self):
    return {**super().get_config(), "salt": self.salt}
