"""Rows per ONNX Runtime call for a model's int8 copy: the same length-sorted
batches of 32 run as one call (what workers do), or cut into calls of fewer
rows each padded to its own longest review, alternated in one process, and
accuracy for each (dynamic int8 scales activations per call).

    python benchmarks/ort_rows.py --model models/quick --reviews 2000

Writes benchmarks/results/ort_rows-<cpu>.json (machine, CPU flags and matmul
peaks recorded) and prints each setting's rate and its ratio to one call.
"""
import argparse
import datetime
import json
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine  # noqa: E402
from benchmarks.reviews_and_models import DATA_DIR, sample_reviews  # noqa: E402

BATCH = 32
RESULTS = REPO / "benchmarks" / "results"


def _batches(token_lists):
  """(ids, mask, rows) of length-sorted batches of BATCH, padded to their
  longest, as the pipeline hands them to the model."""
  from pipeline.model_handler import pad_batch
  order = np.argsort([len(t) for t in token_lists], kind="stable")
  for start in range(0, len(order), BATCH):
    rows = order[start:start + BATCH]
    yield (*pad_batch([token_lists[r] for r in rows]), rows)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", type=pathlib.Path, required=True)
  parser.add_argument("--reviews", type=int, default=2000)
  parser.add_argument("--rows", default="4,8,16,32")
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--out", type=pathlib.Path, default=None)
  args = parser.parse_args(argv)

  from engines import onnx_classifier
  from engines.fast_tokenizer import FastTokenizer
  from engines.model_dir import load_model_card
  from schemas import model_dir as contract
  card = load_model_card(str(args.model))
  if card.int8_copy is None or card.fast_tokenizer is None:
    parser.error(f"{args.model}: needs its int8 and tokenizer copies "
                 "(`reviewscore optimize`)")
  info = machine.describe()
  print(machine.summary(info), flush=True)
  _, texts, labels = sample_reviews(args.reviews, data_dir=args.data_dir)
  tokenizer = FastTokenizer(
      args.model / contract.TOKENIZER_COPY_DIR / contract.TOKENIZER_FILE,
      card.fast_tokenizer)
  batches = list(_batches(tokenizer.token_lists(texts)))
  classifier = onnx_classifier.Classifier(
      args.model / contract.INT8_COPY_DIR / card.int8_copy.model_file)
  settings = [int(r) for r in args.rows.split(",")]

  def run(rows_per_call):
    decided = np.empty(len(texts), np.int64)
    start = time.perf_counter()
    for ids, mask, rows in batches:
      for first in range(0, len(rows), rows_per_call):
        part = slice(first, first + rows_per_call)
        width = int(mask[part].sum(axis=1).max())  # padded on the right
        decided[rows[part]] = classifier.classify(
            ids[part, :width], mask[part, :width])[contract.OUTPUT_LABEL_ID]
    return time.perf_counter() - start, decided

  run(BATCH)  # warm-up
  seconds = {r: [] for r in settings}
  accuracy = {}
  for round_ in range(args.rounds):
    # Each round starts at another setting: the first of a round ran
    # faster than its place alone explains (the CPU's clocks, caches).
    for rows_per_call in settings[round_ % len(settings):] + \
        settings[:round_ % len(settings)]:
      spent, decided = run(rows_per_call)
      seconds[rows_per_call].append(spent)
      accuracy[rows_per_call] = float(np.mean(decided == np.asarray(labels)))
  one_call = min(seconds[BATCH]) if BATCH in seconds else None
  report = {"benchmark": "ort_rows", "date": datetime.date.today().isoformat(),
            "machine": info, "model": {"dir": str(args.model),
                                       "fingerprint": card.model_fingerprint,
                                       "int8": card.int8_copy.runtime},
            "reviews": len(texts), "batch_size": BATCH,
            "rounds": args.rounds, "rows_per_call": {}}
  print(f"{len(texts)} reviews in length-sorted batches of {BATCH}:")
  for rows_per_call, spent in seconds.items():
    best = min(spent)
    row = {"seconds": spent, "best_s": best,
           "median_s": float(np.median(spent)),
           "reviews_per_s": len(texts) / best,
           "accuracy": accuracy[rows_per_call],
           "ratio_to_one_call": one_call / best if one_call else None}
    report["rows_per_call"][str(rows_per_call)] = row
    print(f"  {rows_per_call:3d} rows per call: {row['reviews_per_s']:6.1f} "
          f"reviews/s (best of {args.rounds}; median {np.median(spent):.2f} s), accuracy "
          f"{row['accuracy']:.4f}" + (f", {row['ratio_to_one_call']:.2f}x one "
                                      "call" if one_call else ""))
  out = args.out or RESULTS / f"ort_rows-{machine.cpu_slug(info)}.json"
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
