"""Dropout masks: TensorFlow's stateless_dropout against SeededDropout's.

    .venv/bin/python benchmarks/dropout_masks.py [--seq-length 256]
        [--rounds 5] [--train-steps 6]

1. One dropout call at rate 0.1 on an attention-probability tensor
   ([32, 12, L, L], bfloat16: what the mixed-precision training step drops)
   and on a hidden tensor ([32 * L, 384]), TensorFlow's
   `tf.nn.experimental.stateless_dropout` (a float drawn per unit) against
   `train.model.seeded_dropout.SeededDropout` inside a keyed step (16 bits per
   unit), alternating, with the dropped fraction each gives.
2. The training step of `reviewscore train` (MiniLM from encoders/minilm,
   mean pooling, mixed bfloat16, batches of 32 IMDB training reviews at L
   tokens) with SeededDropout drawing masks both ways: two models in this
   process, one traced with the stock draw, steps alternating on the same
   batches.
Prints milliseconds and the ratio; nothing is written.
"""
import contextlib
import os
import pathlib
import sys
import time
from unittest import mock

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks.train_throughput import run_side_by_side  # noqa: E402
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def stock_drop(layer, inputs):
  """SeededDropout._drop as it was: TensorFlow's stateless dropout."""
  import tensorflow as tf
  from train.model import seeded_dropout
  seed = tf.random.experimental.stateless_fold_in(
      seeded_dropout._stack()[-1], layer._salt_int)
  return tf.nn.experimental.stateless_dropout(
      inputs, rate=layer.rate, seed=seed,
      noise_shape=layer._get_noise_shape(inputs))


def time_calls(functions, args, rounds):
  """Median seconds per call of each function, calls alternating."""
  for function in functions.values():
    function(*args).numpy()
  times = {name: [] for name in functions}
  for _ in range(rounds):
    for name, function in functions.items():
      start = time.perf_counter()
      function(*args).numpy()
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def layer_calls(seq_length, rounds):
  import tensorflow as tf
  from train.model.seeded_dropout import SeededDropout, keyed_by
  layer = SeededDropout(0.1, salt="transformer_layer_0/attention",
                        dtype="mixed_bfloat16")

  def keyed(draw):
    @tf.function
    def call(x):
      with keyed_by(42, tf.constant(7, tf.int64)):
        return draw(x)
    return call

  functions = {"stock": keyed(lambda x: stock_drop(layer, x)),
               "ours": keyed(layer._drop)}
  for name, shape in (("attention", [32, 12, seq_length, seq_length]),
                      ("hidden", [32 * seq_length, 384])):
    x = tf.ones(shape, tf.bfloat16)
    seconds = time_calls(functions, (x,), rounds)
    dropped = {n: float(tf.reduce_mean(tf.cast(f(x) == 0, tf.float32)))
               for n, f in functions.items()}
    print(f"{name:9s} {str(shape):22s} stock {seconds['stock'] * 1e3:7.1f} ms "
          f"(drops {dropped['stock']:.4f})  ours {seconds['ours'] * 1e3:7.1f} "
          f"ms (drops {dropped['ours']:.4f})  ×{seconds['stock'] / seconds['ours']:.2f}")


def training_variants():
  from train.model import seeded_dropout
  # SeededDropout._drop is read when a step traces.
  return {"stock": lambda: mock.patch.object(
              seeded_dropout.SeededDropout, "_drop", stock_drop),
          "ours": contextlib.nullcontext}


def main(argv=None):
  run_side_by_side(__doc__.split("\n\n")[0], argv, first_part="layer calls",
                   calls=layer_calls, training_variants=training_variants)


if __name__ == "__main__":
  main()
