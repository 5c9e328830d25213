"""int8 at the kernel level: what TensorFlow's oneDNN
int8 matmul gives over the bfloat16 matmul our scoring graph runs, on the
dense layers of a MiniLM-sized block, side by side in one process.

    .venv/bin/python benchmarks/int8_kernels.py [--tokens 4096] [--reps 20]

For each dense shape of a block ([tokens, 384] x [384, 384] for query, key,
value and attention output; [384, 1536] and [1536, 384] for the
feed-forward), alternating, best of --rounds:

- bf16: MatMul + BiasAdd in bfloat16, as the scoring graph runs it;
- int8 op: TensorFlow's QuantizedMatMulWithBiasAndDequantize on an already
  quantized uint8 input (SCALED mode), float32 out: the oneDNN int8 kernel
  plus the op's own work;
- int8 dynamic: what a scoring graph would have to run for dynamic
  quantisation from bfloat16 activations: a per-batch scale from the
  largest |x|, uint8 with an offset of 128 (the op takes unsigned inputs),
  the offset folded into the bias, the op, and the cast back to bfloat16.

It also records whether the op takes per-channel weight scales (the
accuracy-first choice) and the error of the dynamic path against the float32
matmul on normal inputs. Writes benchmarks/results/int8_kernels.json, with
the machine (benchmarks/machine.py) and TensorFlow's matmul peaks in this
process before and after.
"""
import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import machine  # noqa: E402

HIDDEN, INTERMEDIATE = 384, 1536
SHAPES = {  # name: (inputs, outputs, how many per block)
    "query/key/value/attention output": (HIDDEN, HIDDEN, 4),
    "feed-forward in": (HIDDEN, INTERMEDIATE, 1),
    "feed-forward out": (INTERMEDIATE, HIDDEN, 1),
}
OFFSET = 128.0  # uint8 zero point for signed activations


def _quantized_weights(weights: np.ndarray):
  scale = float(np.abs(weights).max() / 127.0)
  q = np.clip(np.round(weights / scale), -127, 127)
  quantized = tf.quantization.quantize(tf.constant(q, tf.float32), -127.0,
                                       127.0, tf.qint8, mode="SCALED").output
  return quantized, scale, tf.constant(q.sum(axis=0), tf.float32)


def _int8_matmul(quantized_x, x_scale, weights, weight_scale, bias):
  return tf.raw_ops.QuantizedMatMulWithBiasAndDequantize(
      a=quantized_x, b=weights, bias=bias, min_a=0.0, max_a=255.0 * x_scale,
      min_b=-127.0 * weight_scale, max_b=127.0 * weight_scale,
      min_freezed_output=-1.0, max_freezed_output=1.0, Toutput=tf.float32,
      input_quant_mode="SCALED")


def dense_functions(weights: np.ndarray, bias: np.ndarray):
  """bf16, int8 op (input quantized beforehand), int8 dynamic."""
  w16 = tf.constant(weights, tf.bfloat16)
  b16 = tf.constant(bias, tf.bfloat16)
  qw, w_scale, column_sums = _quantized_weights(weights)
  bias32 = tf.constant(bias, tf.float32)

  @tf.function
  def bf16(x):
    return tf.nn.bias_add(tf.matmul(x, w16), b16)

  @tf.function
  def int8_op(quantized_x, x_scale):
    return _int8_matmul(quantized_x, x_scale, qw, w_scale, bias32)

  @tf.function
  def int8_dynamic(x):
    x32 = tf.cast(x, tf.float32)
    x_scale = tf.maximum(tf.reduce_max(tf.abs(x32)), 1e-12) / 127.0
    quantized = tf.bitcast(tf.cast(tf.round(x32 / x_scale) + OFFSET, tf.uint8),
                           tf.quint8)
    # Σ (q_x + 128) q_w = Σ q_x q_w + 128 Σ q_w: the second term is a constant
    # per output column, taken back through the bias.
    corrected = bias32 - OFFSET * x_scale * w_scale * column_sums
    out = _int8_matmul(quantized, x_scale, qw, w_scale, corrected)
    return tf.cast(out, tf.bfloat16)

  return bf16, int8_op, int8_dynamic


def quantize_input(x):
  x32 = tf.cast(x, tf.float32)
  x_scale = tf.maximum(tf.reduce_max(tf.abs(x32)), 1e-12) / 127.0
  quantized = tf.bitcast(tf.cast(tf.round(x32 / x_scale) + OFFSET, tf.uint8),
                         tf.quint8)
  return quantized, x_scale


def _mean_ms(fn, args, reps):
  np.asarray(fn(*args))  # traces and warms up
  start = time.perf_counter()
  for _ in range(reps):
    out = fn(*args)
  np.asarray(out)
  return (time.perf_counter() - start) / reps * 1e3


def per_channel_supported() -> str:
  """'yes', or the reason the op refuses them."""
  weights = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
  qw, _, _ = _quantized_weights(weights)
  quantized, x_scale = quantize_input(tf.ones([2, 8], tf.bfloat16))
  # Traced, not eager: eagerly the kernel aborts the process on the check.
  per_channel = tf.function(lambda: tf.raw_ops.QuantizedMatMulWithBiasAndDequantize(
      a=quantized, b=qw, bias=tf.zeros([4]), min_a=0.0,
      max_a=255.0 * x_scale, min_b=-tf.ones([4]), max_b=tf.ones([4]),
      min_freezed_output=-1.0, max_freezed_output=1.0, Toutput=tf.float32,
      input_quant_mode="SCALED"))
  try:
    per_channel.get_concrete_function()
    return "yes"
  except (ValueError, tf.errors.InvalidArgumentError) as error:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if "must be" in line), lines[-1])
    return reason[:200]


def measure(tokens: int, reps: int, rounds: int):
  rng = np.random.default_rng(0)
  rows = []
  for name, (inputs, outputs, per_block) in SHAPES.items():
    weights = (rng.standard_normal((inputs, outputs)) /
               np.sqrt(inputs)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(outputs)).astype(np.float32)
    x32 = rng.standard_normal((tokens, inputs)).astype(np.float32)
    x = tf.constant(x32, tf.bfloat16)
    bf16, int8_op, int8_dynamic = dense_functions(weights, bias)
    quantized, x_scale = quantize_input(x)
    times = {"bf16": [], "int8_op": [], "int8_dynamic": []}
    for _ in range(rounds):  # alternating: drifts in speed hit all three
      times["bf16"].append(_mean_ms(bf16, (x,), reps))
      times["int8_op"].append(_mean_ms(int8_op, (quantized, x_scale), reps))
      times["int8_dynamic"].append(_mean_ms(int8_dynamic, (x,), reps))
    best = {key: min(value) for key, value in times.items()}
    reference = x32 @ weights + bias
    got = np.asarray(tf.cast(int8_dynamic(x), tf.float32))
    via_bf16 = np.asarray(tf.cast(bf16(x), tf.float32))
    error = lambda out: float(np.abs(out - reference).mean() /
                              np.abs(reference).mean())
    flops = 2.0 * tokens * inputs * outputs
    row = {
        "dense": name, "shape": [tokens, inputs, outputs],
        "per_block": per_block, "ms": best, "passes_ms": times,
        "gflops": {key: flops / ms / 1e6 for key, ms in best.items()},
        "int8_op_speedup": best["bf16"] / best["int8_op"],
        "int8_dynamic_speedup": best["bf16"] / best["int8_dynamic"],
        "mean_relative_error": {"bf16": error(via_bf16),
                                "int8_dynamic": error(got)},
    }
    rows.append(row)
    print(f"{name} {row['shape']}: bf16 {best['bf16']:.2f} ms, int8 op "
          f"{best['int8_op']:.2f} ms (×{row['int8_op_speedup']:.2f}), int8 "
          f"dynamic {best['int8_dynamic']:.2f} ms "
          f"(×{row['int8_dynamic_speedup']:.2f}); mean relative error bf16 "
          f"{row['mean_relative_error']['bf16']:.4f}, int8 "
          f"{row['mean_relative_error']['int8_dynamic']:.4f}")
  block = {key: sum(r["ms"][key] * r["per_block"] for r in rows)
           for key in ("bf16", "int8_op", "int8_dynamic")}
  print(f"a block's dense layers: bf16 {block['bf16']:.1f} ms, int8 op "
        f"×{block['bf16'] / block['int8_op']:.2f}, int8 dynamic "
        f"×{block['bf16'] / block['int8_dynamic']:.2f}")
  return rows, block


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tokens", type=int, default=32 * 128,
                      help="rows of each matmul: batch × length")
  parser.add_argument("--reps", type=int, default=20)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--results-dir", type=pathlib.Path,
                      default=REPO / "benchmarks" / "results")
  args = parser.parse_args(argv)
  described = machine.describe()
  print(machine.summary(described))
  # And in this process, before and after: the kernels' own conditions.
  peaks = machine.tf_matmul_peaks(n=4096, reps=5, xla=True)
  print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, matmul 4096² "
        "peaks in this process " + ", ".join(
            f"{k} {v:.0f}" for k, v in peaks.items()) + " GFLOP/s")
  per_channel = per_channel_supported()
  print(f"per-channel weight scales: {per_channel}")
  rows, block = measure(args.tokens, args.reps, args.rounds)
  peaks_after = machine.tf_matmul_peaks(n=4096, reps=5, xla=True)
  result = {
      "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      "machine": described,
      # tf.matmul 4096², best of 5, in this process around the measurement.
      "matmul_peaks_gflops_before": peaks,
      "matmul_peaks_gflops_after": peaks_after,
      "settings": vars(args) | {"results_dir": str(args.results_dir)},
      "per_channel_weight_scales": per_channel,
      "dense": rows,
      "block_dense_ms": block,
  }
  args.results_dir.mkdir(parents=True, exist_ok=True)
  path = args.results_dir / "int8_kernels.json"
  path.write_text(json.dumps(result, indent=1) + "\n")
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
