"""Accuracy against training time for the quick preset and its neighbours.

    python benchmarks/quick_frontier.py [--points quick,frozen-1,...]
        [--eval-reviews 2000]
    python benchmarks/quick_frontier.py --tables    # docs/frontier.md only

Each point of the grid changes the quick preset (train/presets.py) in one or
two settings: training reviews, sequence length (head+tail truncation, a
quarter of it the head), frozen lower layers (`--frozen-layers`), learning
rate, batch size. Each trains one epoch with the step `reviewscore train`
runs (the trainer itself, precision chosen as `auto` chooses it here) in a
fresh process, on the first reviews of one seeded order of the IMDB training
split, and is scored on the same --eval-reviews held-out training reviews
(never trained on by any point, the same for all: differences between points
are paired). Training time is the epoch's steps alone, as `reviewscore
train` prints it; tokenizing and scoring are reported beside it.

Writes benchmarks/results/quick_frontier-<cpu>.json (with the machine), a
PNG of accuracy against training minutes beside it, and docs/frontier.md,
the table generated from every such JSON.
"""
import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine  # noqa: E402
from benchmarks.throughput import DATA_DIR  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "frontier.md"
ENCODER = REPO / "encoders" / "minilm"
# The quick preset as training reviews see it (9,000 sampled, a tenth kept
# for validation), and the changes each point makes to it.
QUICK = {"train_reviews": 8100, "seq_length": 256, "frozen_layers": 0,
         "learning_rate": 1e-4, "batch_size": 32}
POINTS = {
    "quick": {},
    "frozen-1": {"frozen_layers": 1},
    "frozen-3": {"frozen_layers": 3},
    "length-128": {"seq_length": 128},
    "length-192-frozen-1": {"seq_length": 192, "frozen_layers": 1},
    "reviews-5400": {"train_reviews": 5400},
    "reviews-5400-lr-2e-4": {"train_reviews": 5400, "learning_rate": 2e-4},
}
SEED = 42


def _point_settings(name: str) -> dict:
  return {**QUICK, **POINTS[name]}


def worker(name, eval_reviews, data_dir, out):
  """Trains one point in this process and scores the held-out reviews."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import numpy as np
  import pyarrow.parquet as pq
  import train  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
  import tensorflow_hub as hub
  import tf_keras
  from train.data.review_packer import ReviewPacker
  from train.encoders.source import resolve_encoder
  from train.loops.trainer import Trainer, TrainSettings, tokenize_reviews
  from train.model.classifier import build_classifier
  point = _point_settings(name)
  precision = "bfloat16" if machine.native_bfloat16() else "float32"
  table = pq.read_table(pathlib.Path(data_dir) / "train.parquet",
                        columns=["text", "label"])
  order = np.random.default_rng(SEED).permutation(table.num_rows)
  held_out = table.take(order[:int(eval_reviews)])
  training = table.take(order[int(eval_reviews):][:point["train_reviews"]])
  source = resolve_encoder(str(ENCODER))
  packer = ReviewPacker(hub.load(source.preprocessor),
                        seq_length=point["seq_length"], truncation="head+tail",
                        head_tokens=point["seq_length"] // 4)
  started = time.monotonic()
  tokenized = [tokenize_reviews(packer, t.column("text").to_pylist(),
                                t.column("label").to_pylist())
               for t in (training, held_out)]
  tokenize_seconds = time.monotonic() - started
  settings = TrainSettings(
      batch_size=point["batch_size"], learning_rate=point["learning_rate"],
      seq_length=point["seq_length"], frozen_layers=point["frozen_layers"],
      epochs=1, precision=precision, pooling="mean", patience=0, seed=SEED,
      checkpoint_every_steps=10**9)
  tf_keras.utils.set_random_seed(SEED)
  model = build_classifier(source, precision=precision, pooling="mean")
  with tempfile.TemporaryDirectory() as tmp:
    trainer = Trainer(model, settings, tokenized[0], tokenized[1], tmp,
                      run_identity={}, progress=lambda m: None,
                      log_every_steps=10**9)
    started = time.monotonic()
    state = trainer.run()
    run_seconds = time.monotonic() - started
  epoch = state["history"][0]
  pathlib.Path(out).write_text(json.dumps({
      "point": name, "settings": point, "precision": precision,
      "train_seconds": epoch["seconds"],
      "eval_seconds": round(run_seconds - epoch["seconds"], 1),
      "tokenize_seconds": round(tokenize_seconds, 1),
      "steps": epoch["steps"], "eval_reviews": len(tokenized[1]),
      "eval_accuracy": epoch["val_accuracy"], "eval_loss": epoch["val_loss"],
      "train_accuracy": epoch["accuracy"]}))


def render(reports) -> str:
  lines = ["# The quick preset's frontier", "",
           "Generated by `python benchmarks/quick_frontier.py --tables` from "
           "`benchmarks/results/quick_frontier-*.json`; do not edit by hand. "
           "Each point changes the quick preset (`train/presets.py`) in the "
           "settings named; one epoch, scored on the same held-out IMDB "
           "training reviews (paired); training time is the epoch's steps "
           "alone, on the machine named. How it is measured: the script's "
           "docstring.", ""]
  for report in reports:
    m = report["machine"]
    lines += [f"## {m['cpu']} (family {m.get('cpu_family')}, model "
              f"{m.get('cpu_model')}), {report['date']}", "",
              f"Flags: {', '.join(m.get('flags', [])) or 'none of note'}; "
              f"precision {report['points'][0]['precision']}; "
              f"{report['points'][0]['eval_reviews']:,} held-out reviews.", "",
              "| point | training reviews | tokens | frozen layers | "
              "learning rate | training | accuracy | vs quick |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    quick = next((p for p in report["points"] if p["point"] == "quick"), None)
    for p in sorted(report["points"], key=lambda p: p["train_seconds"]):
      s = p["settings"]
      versus = (f"{p['train_seconds'] / quick['train_seconds']:.2f}× the "
                f"time, {100 * (p['eval_accuracy'] - quick['eval_accuracy']):+.2f}"
                " points" if quick and p is not quick else "—")
      lines.append(
          f"| {p['point']} | {s['train_reviews']:,} | {s['seq_length']} | "
          f"{s['frozen_layers']} | {s['learning_rate']:.0e} | "
          f"{p['train_seconds'] / 60:.1f} min | "
          f"{100 * p['eval_accuracy']:.2f}% | {versus} |")
    lines.append("")
  return "\n".join(lines)


def write_tables(results=RESULTS, doc=DOC) -> None:
  reports = [json.loads(path.read_text()) for path in
             sorted(results.glob("quick_frontier-*.json"))]
  doc.write_text(render(reports))


def plot(report, path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(figsize=(7, 4.5))
  for p in report["points"]:
    minutes, accuracy = p["train_seconds"] / 60, 100 * p["eval_accuracy"]
    axes.scatter(minutes, accuracy, color="tab:red" if p["point"] == "quick"
                 else "tab:blue")
    axes.annotate(p["point"], (minutes, accuracy), fontsize=8,
                  xytext=(4, 3), textcoords="offset points")
  m = report["machine"]
  axes.set_xlabel("training minutes (one epoch, steps alone)")
  axes.set_ylabel(f"accuracy on {report['points'][0]['eval_reviews']:,} "
                  "held-out reviews (%)")
  axes.set_title(f"quick preset and neighbours: {m['cpu']} family "
                 f"{m.get('cpu_family')} model {m.get('cpu_model')}, "
                 f"{report['points'][0]['precision']}", fontsize=9)
  axes.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(path, dpi=110)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "--worker":
    return worker(*argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--points", default=",".join(POINTS),
                      help=f"comma-separated, of: {', '.join(POINTS)}")
  parser.add_argument("--eval-reviews", type=int, default=2000)
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--tables", action="store_true",
                      help="only write docs/frontier.md from the results")
  args = parser.parse_args(argv)
  if args.tables:
    write_tables()
    return 0
  names = args.points.split(",")
  unknown = sorted(set(names) - set(POINTS))
  if unknown:
    parser.error(f"unknown points {unknown}; known: {', '.join(POINTS)}")
  described = machine.describe()
  print(machine.summary(described), flush=True)
  report = {"benchmark": "quick_frontier",
            "date": datetime.date.today().isoformat(), "machine": described,
            "seed": SEED, "points": []}
  slug = machine.cpu_slug(described)
  out_json = RESULTS / f"quick_frontier-{slug}.json"
  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      out = pathlib.Path(tmp) / f"{name}.json"
      done = subprocess.run(
          [sys.executable, __file__, "--worker", name, str(args.eval_reviews),
           str(args.data_dir), str(out)], capture_output=True, text=True,
          timeout=7200)
      if done.returncode != 0:
        print(done.stderr[-3000:])
        raise SystemExit(f"point {name} failed")
      point = json.loads(out.read_text())
      report["points"].append(point)
      print(f"{name:22s} {point['train_seconds'] / 60:5.1f} min training  "
            f"{100 * point['eval_accuracy']:.2f}% on "
            f"{point['eval_reviews']:,} held-out reviews", flush=True)
      # Written after each point: a long grid cut short keeps what it has.
      out_json.write_text(json.dumps(report, indent=2) + "\n")
  plot(report, RESULTS / f"quick_frontier-{slug}.png")
  write_tables()
  print(f"wrote {out_json}, its PNG and {DOC.relative_to(REPO)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
