"""Dropout masks: TensorFlow's stateless_dropout against SeededDropout's.

    .venv/bin/python benchmarks/dropout_masks.py [--seq-length 256]
        [--rounds 5] [--train-steps 6]

1. One dropout call at rate 0.1 on an attention-probability tensor
   ([32, 12, L, L], bfloat16: what the mixed-precision training step drops)
   and on a hidden tensor ([32 * L, 384]), TensorFlow's
   `tf.nn.experimental.stateless_dropout` (a float drawn per unit) against
   `train.seeded_dropout.SeededDropout` inside a keyed step (16 bits per
   unit), alternating, with the dropped fraction each gives.
2. The training step of `reviewscore train` (MiniLM from encoders/minilm,
   mean pooling, mixed bfloat16, batches of 32 IMDB training reviews at L
   tokens) with SeededDropout drawing masks both ways: two models in this
   process, one traced with the stock draw, steps alternating on the same
   batches.
Prints milliseconds and the ratio; nothing is written.
"""
import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks.throughput import DATA_DIR  # noqa: E402
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def stock_drop(layer, inputs):
  """SeededDropout._drop as it was: TensorFlow's stateless dropout."""
  import tensorflow as tf
  from train import seeded_dropout
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
  from train.seeded_dropout import SeededDropout, keyed_by
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


def training_steps(seq_length, steps, encoder, data_dir):
  from benchmarks.train_throughput import make_batches
  from train import seeded_dropout
  from train.classifier import build_classifier
  from train.encoders import resolve_encoder
  from train.trainer import TokenizedReviews, Trainer, TrainSettings
  batches = make_batches(seq_length, steps + 1, 32, encoder=encoder,
                         data_dir=data_dir)
  source = resolve_encoder(encoder)
  settings = TrainSettings(batch_size=32, epochs=1, precision="bfloat16",
                           pooling="mean")
  dummy = TokenizedReviews(np.zeros((1, 8), np.int32), np.array([8]),
                           np.array([0]))
  ours_drop = seeded_dropout.SeededDropout._drop
  step_fns = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, drop in (("stock", stock_drop), ("ours", ours_drop)):
      seeded_dropout.SeededDropout._drop = drop  # read when the step traces
      model = build_classifier(source, precision="bfloat16", pooling="mean")
      trainer = Trainer(model, settings, dummy, dummy, f"{tmp}/{name}",
                        run_identity={}, progress=lambda m: None)
      step_fns[name] = trainer._train_step
      float(step_fns[name](*batches[0]))  # traced here, with `drop`
    seeded_dropout.SeededDropout._drop = ours_drop
    times = {name: 0.0 for name in step_fns}
    for batch in batches[1:]:
      for name, step in step_fns.items():
        start = time.perf_counter()
        float(step(*batch))
        times[name] += time.perf_counter() - start
  print(f"training step, {steps} batches of 32 at up to {seq_length} tokens: "
        f"stock {times['stock'] / steps:.2f} s  ours {times['ours'] / steps:.2f} s"
        f"  ×{times['stock'] / times['ours']:.2f}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seq-length", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--train-steps", type=int, default=6,
                      help="alternating training steps (0: layer calls only)")
  parser.add_argument("--encoder", default=str(REPO / "encoders/minilm"))
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  args = parser.parse_args(argv)
  import train  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
  layer_calls(args.seq_length, args.rounds)
  if args.train_steps:
    training_steps(args.seq_length, args.train_steps, args.encoder,
                   args.data_dir)


if __name__ == "__main__":
  main()
