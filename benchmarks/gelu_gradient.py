"""The training step's GELU gradient: autodiff of tf.nn.gelu against the
derivative written out (`train.model.bert_backbone._gelu_for_training`).

    .venv/bin/python benchmarks/gelu_gradient.py [--seq-length 256]
        [--rounds 5] [--train-steps 6]

1. GELU and its gradient on a feed-forward activation of a training batch
   ([32 * L, 1536] bfloat16), each way, calls alternating, with the largest
   difference between the two gradients.
2. The training step of `reviewscore train` (MiniLM from encoders/minilm,
   mean pooling, mixed bfloat16, batches of 32 IMDB training reviews at up
   to L tokens) with each GELU: two models in this process, steps
   alternating on the same batches.
Prints milliseconds and the ratio; nothing is written.
"""
import contextlib
import os
import pathlib
import sys
from unittest import mock

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks.dropout_masks import time_calls  # noqa: E402
from benchmarks.train_throughput import run_side_by_side  # noqa: E402
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def gelu_calls(seq_length, rounds):
  import tensorflow as tf
  from train.model import bert_backbone

  def value_and_gradient(activation):
    @tf.function
    def call(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = activation(x)
      return tape.gradient(y, x)
    return call

  functions = {"stock": value_and_gradient(bert_backbone._gelu),
               "ours": value_and_gradient(bert_backbone._gelu_for_training)}
  x = tf.cast(tf.random.stateless_normal([32 * seq_length, 1536], [0, 1]),
              tf.bfloat16)
  seconds = time_calls(functions, (x,), rounds)
  gradients = {name: tf.cast(f(x), tf.float32) for name, f in functions.items()}
  difference = float(tf.reduce_max(tf.abs(gradients["stock"] -
                                          gradients["ours"])))
  print(f"GELU and gradient on {32 * seq_length} x 1536 bfloat16: stock "
        f"{seconds['stock'] * 1e3:.1f} ms  ours {seconds['ours'] * 1e3:.1f} ms"
        f"  ×{seconds['stock'] / seconds['ours']:.2f}  (largest gradient "
        f"difference {difference:.4f})")


def training_variants():
  from train.model import bert_backbone
  # Read when a block is built: the stock model differentiates tf.nn.gelu.
  return {"stock": lambda: mock.patch.dict(
              bert_backbone._TRAINING_ACTIVATIONS, gelu=bert_backbone._gelu),
          "ours": contextlib.nullcontext}


def main(argv=None):
  run_side_by_side(__doc__.split("\n\n")[0], argv, first_part="GELU calls",
                   calls=gelu_calls, training_variants=training_variants)


if __name__ == "__main__":
  main()
