"""Resident memory of the scoring model against the number of batch shapes it has seen.

    python benchmarks/shape_cache.py --model models/m128 [--batch-sizes 12] [--rounds 2]

Why: a scoring process's memory rises slowly with its input although the
pipeline holds no records (docs/scaling.md). TensorFlow's oneDNN kernels
keep the primitives they build for each input shape in a per-thread LRU
cache of fixed capacity, and padded batches come in many shapes (every
batch size times every padded length). This loads the model's serving
signature in this process and calls it with every shape of batch size 1..B
and length 2..seq_length in turn, --rounds times over, sampling resident
memory every 256 calls and at the end; a control calls one shape as many
times. The cache is per thread, so a worker with more threads holds more. Memory that
levels off while new shapes keep coming is a bounded cache, not a leak.
The control runs first, so both curves start from the same loaded model.

Writes benchmarks/results/shape_cache.json (with the machine as
benchmarks/machine.py describes it) and shape_cache.png.
"""
import argparse
import datetime
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import machine  # noqa: E402
from benchmarks.throughput import read_card  # noqa: E402
from runtime import hardware, quiet, text_ops  # noqa: E402
from schemas import model_dir as contract  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
SAMPLE_EVERY = 256


def _rss_mib() -> float:
  status = pathlib.Path("/proc/self/status").read_text()
  return int(status.split("VmRSS:")[1].split()[0]) / 1024


def sweep(classify, shapes, log):
  """Calls `classify` once per shape; (calls, distinct shapes, RSS MiB)."""
  import numpy as np
  import tensorflow as tf
  samples, seen, start = [], set(), time.time()
  for calls, (batch, length) in enumerate(shapes, 1):
    ids = tf.constant(np.full((batch, length), 1000, np.int32))
    classify(**{contract.TOKEN_IDS: ids,
                contract.TOKEN_MASK: tf.ones_like(ids)})
    seen.add((batch, length))
    if calls % SAMPLE_EVERY == 0 or calls == len(shapes):
      samples.append({"calls": calls, "distinct_shapes": len(seen),
                      "rss_mib": round(_rss_mib(), 1)})
      log(f"  {calls:,} calls, {len(seen):,} shapes: "
          f"{samples[-1]['rss_mib']:,.0f} MiB ({time.time() - start:.0f}s)")
  return samples


def plot(report, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axis = plt.subplots(figsize=(7, 4))
  for name, style in (("many_shapes", "o-"), ("one_shape", "s--")):
    points = report[name]
    axis.plot([p["calls"] for p in points], [p["rss_mib"] for p in points],
              style, label=name.replace("_", " "), markersize=3)
  first_round = report["shapes_per_round"]
  axis.axvline(first_round, color="grey", linewidth=0.8)
  axis.text(first_round, axis.get_ylim()[0], " every shape seen once",
            color="grey", va="bottom", fontsize=8)
  axis.set_xlabel("model calls")
  axis.set_ylabel("resident memory (MiB)")
  axis.set_title(f"Scoring model, {report['model_seq_length']} tokens, "
                 f"batch 1..{report['batch_sizes']}")
  axis.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, type=pathlib.Path,
                      help="a model directory written by `reviewscore train`")
  parser.add_argument("--batch-sizes", type=int, default=12)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--results-dir", type=pathlib.Path, default=RESULTS)
  args = parser.parse_args(argv)

  # Imported as a scoring process imports them.
  tf = quiet.import_tensorflow(keras=False)
  text_ops.register_text_ops()
  card = read_card(args.model)
  seq_length = card.seq_length
  # The precision `reviewscore score` would compute in on this machine.
  precision, why = hardware.choose_precision(
      hardware.AUTO, available=card.precisions)
  signature = card.classify_signature(precision)
  module = tf.saved_model.load(str(args.model / contract.SAVED_MODEL_DIR))
  classify = module.signatures[signature]
  lengths = range(2, seq_length + 1)
  shapes = [(batch, length) for batch in range(1, args.batch_sizes + 1)
            for length in lengths]
  calls = len(shapes) * args.rounds
  print(f"{signature} ({why}): one shape {calls:,} times, then "
        f"{len(shapes):,} shapes {args.rounds} times over")
  one = sweep(classify, [(args.batch_sizes, seq_length // 2)] * calls, print)
  many = sweep(classify, shapes * args.rounds, print)
  report = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "command": " ".join(["python", "benchmarks/shape_cache.py",
                           *(argv if argv is not None else sys.argv[1:])]),
      # Memory, not speed: no matmul peaks.
      "machine": machine.describe(peaks=False),
      "model_seq_length": seq_length, "batch_sizes": args.batch_sizes,
      "shapes_per_round": len(shapes),
      # The primitive cache is per thread: more threads, more caches.
      "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                  "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                  "cpus": os.cpu_count()},
      "signature": signature,
      "many_shapes": many, "one_shape": one,
  }
  args.results_dir.mkdir(parents=True, exist_ok=True)
  (args.results_dir / "shape_cache.json").write_text(
      json.dumps(report, indent=1) + "\n")
  plot(report, args.results_dir / "shape_cache.png")
  ends = [next(p["rss_mib"] for p in many if p["calls"] >= r * len(shapes))
          for r in range(1, args.rounds + 1)]
  print(f"one shape: {one[0]['rss_mib']:,.0f} -> {one[-1]['rss_mib']:,.0f} MiB; "
        f"many shapes: {many[0]['rss_mib']:,.0f} MiB after {SAMPLE_EVERY} calls, "
        "at the end of each round " + ", ".join(f"{e:,.0f}" for e in ends) + " MiB")


if __name__ == "__main__":
  main()
