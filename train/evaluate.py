"""Evaluating and querying an exported model directory.

Both go through the exported SavedModel, never the training objects, so they
measure what scoring will serve.
"""
import json
import pathlib
from typing import List, Optional, Sequence, Tuple

import numpy as np

from pipeline import metrics as metric_lib
from pipeline import plots
from train import data as data_lib
from train.export import MODEL_CARD_FILE, SAVED_MODEL_DIR, write_json


class ModelDirError(Exception):
  """A model directory is missing its SavedModel or its model card."""


def load_model_dir(model_dir):
  """(SavedModel, model card) of a directory written by `reviewscore train`."""
  import tensorflow as tf
  import tensorflow_text  # noqa: F401  registers the ops the preprocessor uses
  model_dir = pathlib.Path(model_dir)
  card_path = model_dir / MODEL_CARD_FILE
  if not (model_dir / SAVED_MODEL_DIR / "saved_model.pb").is_file():
    raise ModelDirError(f"{model_dir}: no {SAVED_MODEL_DIR}/saved_model.pb")
  if not card_path.is_file():
    raise ModelDirError(f"{model_dir}: no {MODEL_CARD_FILE} (unfinished run?)")
  card = json.loads(card_path.read_text())
  return tf.saved_model.load(str(model_dir / SAVED_MODEL_DIR)), card


def score_texts(model, texts: Sequence[str], *, batch_size: int = 64
                ) -> np.ndarray:
  """Positive-class probabilities, batching texts of similar length."""
  import tensorflow as tf
  serve = model.signatures["serving_default"]
  order = np.argsort([len(t) for t in texts], kind="stable")
  scores = np.empty(len(texts), np.float32)
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    batch = tf.constant([texts[i] for i in rows])
    scores[rows] = serve(text=batch)["probability"].numpy()
  return scores


def evaluate_model(model_dir, data_path, *, split: str = "test",
                   out_dir=None, max_examples: Optional[int] = None,
                   text_column: str = "text", label_column: str = "label",
                   id_column: str = "review_id", seed: int = 42) -> dict:
  """Scores a labelled split, writes metrics JSON and plots; returns metrics."""
  model, card = load_model_dir(model_dir)
  class_names = card.get("class_names", list(data_lib.DEFAULT_CLASS_NAMES))
  labelled = data_lib.read_evaluation_set(
      data_path, split, text_column=text_column, label_column=label_column,
      id_column=id_column, class_names=class_names)
  labelled = data_lib.sample(labelled, max_examples, seed=seed)
  scores = score_texts(model, labelled.texts)
  threshold = float(card.get("threshold", 0.5))
  result = metric_lib.binary_metrics(labelled.labels, scores, threshold=threshold)
  result["data"] = labelled.summary()
  result["model_fingerprint"] = card.get("model_fingerprint")
  out_dir = pathlib.Path(out_dir or pathlib.Path(model_dir) / f"eval-{split}")
  out_dir.mkdir(parents=True, exist_ok=True)
  write_json(out_dir / "metrics.json", result)
  plots.reliability_diagram(labelled.labels, scores, out_dir / "reliability.png")
  plots.score_histogram(scores, out_dir / "score_histogram.png",
                        labels=labelled.labels, threshold=threshold)
  plots.roc_plot(labelled.labels, scores, out_dir / "roc.png",
                 auc=result["roc_auc"])
  plots.confusion_plot(result["confusion_matrix"]["rows_true_cols_predicted"],
                       class_names, out_dir / "confusion.png")
  result["out_dir"] = str(out_dir)
  return result


def predict_texts(model_dir, texts: Sequence[str]) -> List[Tuple[float, str]]:
  """(score, class name) per text."""
  model, card = load_model_dir(model_dir)
  threshold = float(card.get("threshold", 0.5))
  names = card.get("class_names", list(data_lib.DEFAULT_CLASS_NAMES))
  scores = score_texts(model, list(texts))
  return [(float(s), names[int(s >= threshold)]) for s in scores]
