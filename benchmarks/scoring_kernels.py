"""The bfloat16 scoring graph's fused kernels against the unfused graphs,
side by side in one process.

    .venv/bin/python benchmarks/scoring_kernels.py [--rows 16384] [--reps 30]

1. Layer norm on a [rows, 384] bfloat16 tensor: train.model.bert_backbone.LayerNorm
   unfused (float32 statistics from tf.nn.moments, as training computes it)
   against `fused=True` (the graph grappler turns into one _MklLayerNorm).
2. Attention scores at 512 tokens, batch 32, 12 heads of 32: q pre-scaled,
   matmul, then + mask (three passes over the scores) against
   matmul · scale + mask (one oneDNN batch matmul with post-ops).
3. The whole MiniLM-sized block stack is measured by benchmarks/throughput.py.

Each pair runs alternately, best of --rounds; the ratio is printed.
"""
import argparse
import math
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import train  # noqa: E402,F401  (TF_USE_LEGACY_KERAS)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from train.model.bert_backbone import LayerNorm  # noqa: E402


def _best_ms(fn, args, reps, rounds):
  fn(*args).numpy()  # traces and warms up
  best = float("inf")
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(reps):
      out = fn(*args)
    out.numpy()
    best = min(best, (time.perf_counter() - start) / reps)
  return best * 1e3


def _compare(name, slow_name, slow, fast_name, fast, args, reps, rounds):
  # Alternate the two so that drifts in the machine's speed hit both.
  slow_ms, fast_ms = float("inf"), float("inf")
  for _ in range(rounds):
    slow_ms = min(slow_ms, _best_ms(slow, args, reps, 1))
    fast_ms = min(fast_ms, _best_ms(fast, args, reps, 1))
  print(f"{name}: {slow_name} {slow_ms:.2f} ms, {fast_name} {fast_ms:.2f} ms, "
        f"×{slow_ms / fast_ms:.2f}")
  return slow_ms, fast_ms


def layer_norm(rows, reps, rounds, width=384):
  layer = LayerNorm(1e-12, dtype="mixed_bfloat16")
  x = tf.cast(tf.random.stateless_normal([rows, width], [1, 2]), tf.bfloat16)
  layer(x)  # builds the weights
  spec = [tf.TensorSpec([None, width], tf.bfloat16)]
  unfused = tf.function(lambda t: layer(t), input_signature=spec)
  fused = tf.function(lambda t: layer(t, fused=True), input_signature=spec)
  difference = tf.reduce_max(tf.abs(tf.cast(unfused(x), tf.float32) -
                                    tf.cast(fused(x), tf.float32))).numpy()
  print(f"layer norm [{rows}, {width}] bfloat16: max |fused - unfused| "
        f"{difference:.4f} (bfloat16 rounding)")
  return _compare("layer norm", "unfused", unfused, "fused", fused, (x,),
                  reps, rounds)


def attention_scores(reps, rounds, batch=32, heads=12, length=512, size=32):
  seed = [3, 4]
  q, k = (tf.cast(tf.random.stateless_normal([batch, heads, length, size],
                                             [seed[0], seed[1] + i]),
                  tf.bfloat16) for i in range(2))
  lengths = np.random.default_rng(0).integers(length // 2, length + 1, batch)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.float32)
  bias = tf.constant((1.0 - mask)[:, None, None, :] * -1e9, tf.bfloat16)
  scale = tf.constant(1.0 / math.sqrt(size), tf.bfloat16)
  spec = [tf.TensorSpec([None, heads, None, size], tf.bfloat16)] * 2 + [
      tf.TensorSpec([None, 1, 1, None], tf.bfloat16)]
  separate = tf.function(
      lambda q, k, b: tf.matmul(q * scale, k, transpose_b=True) + b,
      input_signature=spec)
  fused = tf.function(
      lambda q, k, b: tf.matmul(q, k, transpose_b=True) * scale + b,
      input_signature=spec)
  return _compare(f"attention scores [{batch}, {heads}, {length}, {length}]",
                  "scale q, matmul, + mask", separate,
                  "matmul · scale + mask", fused, (q, k, bias), reps, rounds)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rows", type=int, default=16384)
  parser.add_argument("--reps", type=int, default=30)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args(argv)
  print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs")
  layer_norm(args.rows, args.reps, args.rounds)
  attention_scores(max(3, args.reps // 5), args.rounds)
  return 0


if __name__ == "__main__":
  sys.exit(main())
