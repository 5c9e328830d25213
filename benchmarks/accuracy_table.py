"""Accuracy table: the linear baseline beside our fine-tuned models.

Trains TF-IDF (unigrams + bigrams) + logistic regression on the same 80/20
split of the labelled training reviews that `reviewscore train` uses (seed
42), scores the test reviews, and prints one table with our models' figures
from their model cards, all on the same test reviews:

    accuracy, ROC AUC, training time, scoring reviews/s

Scoring speed is measured here, in this run, on the same sample of test
reviews for every row (raw strings in, scores out: `serving_default` for our
models, `predict_proba` for the baseline), so the column compares like with
like. Writes the rows with the machine (benchmarks/machine.py) to --out.
Needs the benchmark extra (`pip install -e '.[benchmark]'`).

  .venv/bin/python benchmarks/accuracy_table.py models/imdb-256-ht-mean models/quick
"""
import argparse
import datetime
import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)


from benchmarks import machine  # noqa: E402
from benchmarks.throughput import DATA_DIR  # noqa: E402
from evaluation.metrics import binary_metrics  # noqa: E402
from train import data as data_lib  # noqa: E402


def linear_baseline(train_set, test_set, speed_texts):
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  model = make_pipeline(
      TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                      max_features=500_000),
      LogisticRegression(C=8.0, max_iter=2000))
  start = time.perf_counter()
  model.fit(train_set.texts, train_set.labels)
  train_seconds = time.perf_counter() - start
  scores = model.predict_proba(test_set.texts)[:, 1]
  start = time.perf_counter()
  model.predict_proba(speed_texts)
  speed = len(speed_texts) / (time.perf_counter() - start)
  return scores, train_seconds, speed


def our_model(model_dir: pathlib.Path, speed_texts):
  """Test metrics from the model card; scoring speed measured here."""
  import tensorflow as tf
  from engines.model_dir import load_saved_model
  from train.export.evaluate import score_texts
  model, model_card = load_saved_model(model_dir)
  card = model_card.to_dict()
  score_texts(model, speed_texts[:64])  # traces the functions once
  start = time.perf_counter()
  score_texts(model, speed_texts, batch_size=32)
  speed = len(speed_texts) / (time.perf_counter() - start)
  history = json.loads((model_dir / "history.json").read_text())
  settings = card["hyperparameters"]
  name = (f"MiniLM {settings['seq_length']} {settings['truncation']} "
          f"{settings['pooling']} {card['training']['epochs_run']}ep "
          f"{settings['precision']}")
  del tf
  return name, card, sum(h["seconds"] for h in history), speed


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("models", nargs="*", type=pathlib.Path,
                      help="model directories written by `reviewscore train`")
  parser.add_argument("--data", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--speed-reviews", type=int, default=1000)
  parser.add_argument("--out", type=pathlib.Path,
                      default=REPO / "benchmarks" / "results" / "accuracy.json")
  args = parser.parse_args(argv)
  described = machine.describe()  # the speed column's machine
  print(machine.summary(described))
  labelled = data_lib.read_labelled(args.data, "train")
  train_set, _ = data_lib.split_train_validation(labelled, seed=42)
  test_set = data_lib.read_labelled(args.data, "test")
  speed_texts = test_set.texts[:args.speed_reviews]
  rows = []
  scores, seconds, speed = linear_baseline(train_set, test_set, speed_texts)
  m = binary_metrics(test_set.labels, scores)
  rows.append({"model": "TF-IDF 1-2 grams + logistic regression",
               "test_reviews": m["count"], "accuracy": m["accuracy"],
               "roc_auc": m["roc_auc"], "train_seconds": seconds,
               "scoring_reviews_per_s": speed})
  for model_dir in args.models:
    name, card, seconds, speed = our_model(model_dir, speed_texts)
    test = card["metrics"].get("test") or {}
    rows.append({"model": name, "dir": str(model_dir),
                 "test_reviews": test.get("count"),
                 "accuracy": test.get("accuracy"), "roc_auc": test.get("roc_auc"),
                 "train_seconds": seconds, "scoring_reviews_per_s": speed})
  header = ("| model | test reviews | accuracy | ROC AUC | training time | "
            "scoring reviews/s |\n| --- | ---: | ---: | ---: | ---: | ---: |")
  print(header)
  for r in rows:
    print(f"| {r['model']} | {r['test_reviews']:,} | {r['accuracy']:.4f} | "
          f"{r['roc_auc']:.4f} | {r['train_seconds'] / 60:.1f} min | "
          f"{r['scoring_reviews_per_s']:.1f} |")
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps({
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "command": "python benchmarks/accuracy_table.py " + " ".join(
          map(str, argv if argv is not None else sys.argv[1:])),
      "machine": described, "rows": rows}, indent=2))


if __name__ == "__main__":
  main()
