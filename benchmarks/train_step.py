"""Levers on the training step: the step `reviewscore train` runs, as it is
and changed one lever at a time, at one fixed shape (batches of 32 real IMDB
training reviews padded to --seq-length, so that XLA compiles once), each
variant in a fresh process, rounds alternating the variants.

    python benchmarks/train_step.py [--precisions float32,bfloat16]
        [--variants plain,inter-op-1,...] [--seq-length 256] [--steps 4]
        [--rounds 2]

Variants: plain; xla (the step compiled with `jit_compile`); inter-op-1 (one
inter-op thread); onednn-off (`TF_ENABLE_ONEDNN_OPTS=0`); no-clipping
(AdamW without global clipping: shows what clipping costs, not a recipe);
frozen-1 and frozen-3 (`--frozen-layers`: the embeddings, then also the two
lowest blocks, left untrained); no-attention-dropout (the encoder's
attention-probability dropout at 0: what it costs, a recipe change). Prints reviews/s, useful GFLOP/s (a step
counted as three forward passes over the real tokens) and the share of
TensorFlow's matmul peak measured in the same run (frozen variants do less
work per step: their share counts the full step's FLOPs, as the time a user
waits for a step), each variant's ratio to plain; writes
benchmarks/results/train_step-<cpu>.json with the machine.
"""
import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from unittest import mock

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine  # noqa: E402
from benchmarks.train_throughput import make_batches  # noqa: E402
from benchmarks.throughput import DATA_DIR  # noqa: E402

ENCODER = REPO / "encoders" / "minilm"
UNTIMED = 2  # tracing or compiling, and oneDNN's first primitives
# variant -> what it changes: settings, environment, or a hook in the worker
VARIANTS = {
    "plain": {},
    "xla": {"xla": True},
    "inter-op-1": {"inter_op_threads": 1},
    "onednn-off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
    "no-clipping": {"clipping": False},
    "frozen-1": {"settings": {"frozen_layers": 1}},
    "frozen-3": {"settings": {"frozen_layers": 3}},
    "no-attention-dropout": {"config": {"attention_dropout": 0.0}},
}
DEFAULT_VARIANTS = ",".join(VARIANTS)


def _fixed_shape(batches, seq_length):
  out = []
  for ids, mask, labels in batches:
    padded_ids = np.zeros((len(ids), seq_length), np.int32)
    padded_mask = np.zeros_like(padded_ids)
    padded_ids[:, :ids.shape[1]] = ids
    padded_mask[:, :ids.shape[1]] = mask
    out.append((padded_ids, padded_mask, labels))
  return out


def worker(precision, variant, batches_path, out):
  """One variant in this process: seconds per timed step."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  lever = VARIANTS[variant]
  import train  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
  import tensorflow as tf
  if "inter_op_threads" in lever:
    tf.config.threading.set_inter_op_parallelism_threads(
        lever["inter_op_threads"])

  from train.encoders.source import resolve_encoder
  from train.loops.trainer import TokenizedReviews, Trainer, TrainSettings
  from train.model.classifier import build_classifier
  data = np.load(batches_path)
  batches = [(data[f"ids{i}"], data[f"mask{i}"], data[f"labels{i}"])
             for i in range(int(data["n"]))]
  settings = TrainSettings(batch_size=len(batches[0][2]), epochs=1,
                           precision=precision, pooling="mean",
                           **lever.get("settings", {}))
  dummy = TokenizedReviews(np.zeros((1, 8), np.int32), np.array([8]),
                           np.array([0]))
  from train.model.bert_config import BertConfig
  from_dict = BertConfig.from_dict
  with mock.patch.object(BertConfig, "from_dict", lambda d: dataclasses.replace(
      from_dict(d), **lever.get("config", {}))):
    model = build_classifier(resolve_encoder(str(ENCODER)),
                             precision=precision, pooling="mean")
  with tempfile.TemporaryDirectory() as tmp:
    trainer = Trainer(model, settings, dummy, dummy, f"{tmp}/run",
                      run_identity={}, progress=lambda m: None)
    if lever.get("clipping") is False:
      trainer.optimizer.global_clipnorm = None  # read when the step traces
    step = trainer._train_step
    if lever.get("xla"):
      step = tf.function(step.python_function, jit_compile=True)
    for batch in batches[:UNTIMED]:
      float(step(*batch))
    start = time.perf_counter()
    for batch in batches[UNTIMED:]:
      loss = float(step(*batch))
    seconds = (time.perf_counter() - start) / (len(batches) - UNTIMED)
  pathlib.Path(out).write_text(json.dumps({"seconds_per_step": seconds,
                                           "loss": loss}))


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "--worker":
    return worker(*argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--precisions", default="float32,bfloat16")
  parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                      help=f"comma-separated, of: {DEFAULT_VARIANTS}")
  parser.add_argument("--seq-length", type=int, default=256)
  parser.add_argument("--steps", type=int, default=4, help="timed steps")
  parser.add_argument("--rounds", type=int, default=2,
                      help="passes over the variants; each variant's best")
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  args = parser.parse_args(argv)
  variants = args.variants.split(",")
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    parser.error(f"unknown variants {unknown}; known: {DEFAULT_VARIANTS}")
  if "plain" not in variants:
    variants.insert(0, "plain")
  from train.model.bert_config import BertConfig
  info = json.loads((ENCODER / "encoder_info.json").read_text())
  config = BertConfig.from_dict(info["bert_config"])
  described = machine.describe()
  print(machine.summary(described), flush=True)
  batches = _fixed_shape(make_batches(
      args.seq_length, args.steps + UNTIMED, 32, encoder=str(ENCODER),
      data_dir=args.data_dir), args.seq_length)
  timed = batches[UNTIMED:]
  flops_per_step = 3 * np.mean([sum(int(n) * config.flops_per_token(int(n))
                                    for n in mask.sum(1))
                                for _, mask, _ in timed])
  computed_flops_per_step = 3 * 32 * args.seq_length * config.flops_per_token(
      args.seq_length)
  peaks = described.get("matmul_peaks_gflops", {})
  report = {"benchmark": "train_step",
            "date": datetime.date.today().isoformat(), "machine": described,
            "seq_length": args.seq_length, "batch_size": 32,
            "timed_steps": args.steps, "rounds": args.rounds,
            "useful_share_of_padded_tokens": float(
                np.mean([mask.mean() for _, mask, _ in timed])),
            "runs": []}
  best = {}
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "batches.npz"
    arrays = {"n": len(batches)}
    for i, (ids, mask, labels) in enumerate(batches):
      arrays.update({f"ids{i}": ids, f"mask{i}": mask, f"labels{i}": labels})
    np.savez(path, **arrays)
    for round_index in range(args.rounds):
      for precision in args.precisions.split(","):
        for variant in variants:
          out = pathlib.Path(tmp) / "out.json"
          env = {**os.environ, **VARIANTS[variant].get("env", {})}
          done = subprocess.run(
              [sys.executable, __file__, "--worker", precision, variant,
               str(path), str(out)], capture_output=True, text=True,
              timeout=1800, env=env)
          if done.returncode != 0:
            print(done.stderr[-3000:])
            raise SystemExit(f"{precision} {variant} failed")
          seconds = json.loads(out.read_text())["seconds_per_step"]
          report["runs"].append({"round": round_index + 1,
                                 "precision": precision, "variant": variant,
                                 "seconds_per_step": seconds})
          print(f"round {round_index + 1} {precision:9s} {variant:12s} "
                f"{seconds:6.3f} s/step", flush=True)
          key = (precision, variant)
          best[key] = min(best.get(key, seconds), seconds)
  report["best"] = []
  for (precision, variant), seconds in best.items():
    gflops = flops_per_step / seconds / 1e9
    peak = peaks.get(precision)
    plain = best[(precision, "plain")]
    row = {"precision": precision, "variant": variant,
           "seconds_per_step": seconds, "reviews_per_s": 32 / seconds,
           "useful_gflops": gflops,
           "computed_gflops": computed_flops_per_step / seconds / 1e9,
           "share_of_matmul_peak": gflops / peak if peak else None,
           "ratio_to_plain": plain / seconds}
    report["best"].append(row)
    print(f"{precision:9s} {variant:12s} {row['reviews_per_s']:6.1f} reviews/s "
          f"{gflops:6.0f} GFLOP/s" + (f" ({gflops / peak:.0%} of the "
                                      f"{precision} matmul peak)"
                                      if peak else "")
          + f"  x{row['ratio_to_plain']:.2f} plain", flush=True)
  out = (REPO / "benchmarks" / "results" /
         f"train_step-{machine.cpu_slug(described)}.json")
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
