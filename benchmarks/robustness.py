"""Robustness: does a model buy IMDB points with IMDB quirks?

On the validation split that `reviewscore train` holds out (80/20, seed 42;
the test set stays for final figures), for each model:

- rating phrases ("7/10", "3 out of 10", "4 stars"): the reviews that carry
  one, scored as written and with the phrases cut out; the accuracy lost
  and the labels that flip measure how much the model reads the rating
  rather than the review;
- HTML line breaks: reviews with `<br />`, scored as written and with the
  tags turned into spaces (a model trained without `--keep-markup` drops
  them in its tokenizer, so nothing may change);
- review length: accuracy in quartiles of length (words), from short to
  long.

Scores go through the model's serving signature (raw strings in, its own
tokenizer, threshold and precision). Writes benchmarks/results/robustness.json
(with the machine as benchmarks/machine.py describes it).

  python benchmarks/robustness.py /work/runs/student/soft-1ep /work/runs/default-512
"""
import argparse
import datetime
import json
import pathlib
import re
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from benchmarks import machine  # noqa: E402
from benchmarks.throughput import DATA_DIR  # noqa: E402
from schemas import model_dir as contract  # noqa: E402
from train import data as data_lib  # noqa: E402

# What IMDB reviewers write to state their rating; the labels follow the
# rating (negative at 4 of 10 or less, positive at 7 or more).
RATING_PHRASE = re.compile(
    r"\b(\d{1,2}(\.\d)?\s*(/|out of)\s*10|\d(\.\d)?\s*(/|out of)\s*5"
    r"|\d(\.\d)?\s*stars?|[a-z]+ out of (ten|five))\b", re.IGNORECASE)
LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def without_ratings(text: str) -> str:
  return RATING_PHRASE.sub(" ", text)


def without_line_breaks(text: str) -> str:
  return LINE_BREAK.sub(" ", text)


def labels(model, texts, batch_size):
  from train.export.evaluate import serve_texts
  return serve_texts(model, texts, (contract.OUTPUT_LABEL_ID,),
                     batch_size=batch_size)[contract.OUTPUT_LABEL_ID]


def edited_probe(model, texts, truth, edit, batch_size):
  """Accuracy as written against edited, on the reviews the edit changes."""
  rows = [i for i, t in enumerate(texts) if edit(t) != t]
  as_written = labels(model, [texts[i] for i in rows], batch_size)
  edited = labels(model, [edit(texts[i]) for i in rows], batch_size)
  y = truth[rows]
  return {"reviews": len(rows),
          "accuracy_as_written": float(np.mean(as_written == y)),
          "accuracy_edited": float(np.mean(edited == y)),
          "labels_flipped": int(np.sum(as_written != edited)),
          "right_to_wrong": int(np.sum((as_written == y) & (edited != y))),
          "wrong_to_right": int(np.sum((as_written != y) & (edited == y)))}


def length_probe(model, texts, truth, batch_size, quartiles=4):
  predicted = labels(model, texts, batch_size)
  words = np.array([len(t.split()) for t in texts])
  edges = np.quantile(words, np.linspace(0, 1, quartiles + 1))
  rows = []
  for q in range(quartiles):
    upper = words <= edges[q + 1] if q == quartiles - 1 else words < edges[q + 1]
    chosen = (words >= edges[q]) & upper
    rows.append({"words_from": int(edges[q]), "words_to": int(edges[q + 1]),
                 "reviews": int(chosen.sum()),
                 "accuracy": float(np.mean(predicted[chosen] == truth[chosen]))})
  return {"accuracy": float(np.mean(predicted == truth)), "quartiles": rows}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("models", nargs="+", type=pathlib.Path,
                      help="model directories written by `reviewscore train`")
  parser.add_argument("--data", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--max-line-break-reviews", type=int, default=500,
                      help="the <br /> probe's sample (the tokenizer is "
                      "expected to make it a no-op)")
  parser.add_argument("--out", type=pathlib.Path,
                      default=REPO / "benchmarks" / "results" / "robustness.json")
  args = parser.parse_args(argv)
  from engines.model_dir import load_saved_model
  labelled = data_lib.read_labelled(args.data, "train")
  _, validation = data_lib.split_train_validation(labelled, seed=42)
  texts, truth = validation.texts, np.asarray(validation.labels)
  with_breaks = [i for i, t in enumerate(texts) if LINE_BREAK.search(t)]
  with_breaks = with_breaks[:args.max_line_break_reviews]
  report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="minutes"), "command": "python benchmarks/robustness.py " +
      " ".join(map(str, argv if argv is not None else sys.argv[1:])),
      "machine": machine.describe(peaks=False),  # accuracy, not speed
      "split": f"validation of {args.data} (20%, seed 42)",
      "reviews": len(texts), "models": []}
  for model_dir in args.models:
    model, card = load_saved_model(model_dir)
    entry = {"model": str(model_dir), "fingerprint": card.model_fingerprint,
             "rating_phrases": edited_probe(model, texts, truth,
                                            without_ratings, args.batch_size),
             "line_breaks": edited_probe(
                 model, [texts[i] for i in with_breaks], truth[with_breaks],
                 without_line_breaks, args.batch_size),
             "length": length_probe(model, texts, truth, args.batch_size)}
    report["models"].append(entry)
    r, b = entry["rating_phrases"], entry["line_breaks"]
    print(f"{model_dir}: validation {entry['length']['accuracy']:.2%}; "
          f"{r['reviews']} reviews with a rating phrase: "
          f"{r['accuracy_as_written']:.2%} as written, "
          f"{r['accuracy_edited']:.2%} without ({r['labels_flipped']} flipped); "
          f"<br /> removed from {b['reviews']}: {b['labels_flipped']} flipped; "
          "by length: " + ", ".join(
              f"{q['words_from']}-{q['words_to']} words {q['accuracy']:.2%}"
              for q in entry["length"]["quartiles"]))
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(report, indent=1))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
