"""Evaluating and querying an exported model directory.

Both go through the exported SavedModel, never the training objects, so they
measure what scoring will serve.
"""
import pathlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from evaluation import metrics as metric_lib
from evaluation import plots
from engines.model_dir import copy_problems, load_saved_model
from runtime.filesystems import is_remote
from schemas import columns
from schemas import model_dir as contract
from train.data import reviews as data_lib
from train.export.serving import write_json
from train.data.labels import LabelError, LabelScheme

METRICS_FILE = "metrics.json"


def score_texts(model, texts: Sequence[str], *, batch_size: int = 64,
                output: str = contract.OUTPUT_PROBABILITY) -> np.ndarray:
  """One output of the serving signature (by default the positive class's
  probability, or the likeliest class's), batching texts of similar length."""
  return serve_texts(model, texts, (output,), batch_size=batch_size)[output]


def serve_texts(model, texts: Sequence[str], outputs: Sequence[str], *,
                batch_size: int = 64) -> Dict[str, np.ndarray]:
  """Outputs of the serving signature in input order, one pass over texts
  batched by similar length."""
  import tensorflow as tf
  serve = model.signatures[contract.SERVING_SIGNATURE]
  order = np.argsort([len(t) for t in texts], kind="stable")
  results = {}
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    batch = tf.constant([texts[i] for i in rows])
    served = serve(**{contract.TEXT_INPUT: batch})
    for name in outputs:
      values = served[name].numpy()
      if name not in results:
        results[name] = np.empty((len(texts),) + values.shape[1:], values.dtype)
      results[name][rows] = values
  return {name: results.get(name, np.empty(0, np.float32)) for name in outputs}


def _load(model_dir, say: Callable[[str], None]):
  """The SavedModel and card; these commands never compute with the
  copies, so a damaged copy is said in one line, not refused."""
  model, card = load_saved_model(model_dir, check_copies=False)
  for precision, problem in copy_problems(str(model_dir), card).items():
    say(f"note: the {precision} copy cannot be used ({problem}); this "
        "command computes with the SavedModel")
  return model, card


def evaluate_model(model_dir, data_path, *, split: str = "test",
                   out_dir=None, max_examples: Optional[int] = None,
                   text_column: Optional[str] = None,
                   label_column: Optional[str] = None,
                   id_column: Optional[str] = None,
                   label_map: Optional[str] = None,
                   positional_ids: bool = False, seed: int = 42,
                   say: Callable[[str], None] = print) -> dict:
  """Scores a labelled split, writes metrics JSON and plots; returns metrics.

  Labels are read as the model's card says they were in training (its class
  names, label map and columns) unless `label_map` or the columns are given:
  a model trained on star ratings mapped to neg/pos reads its `rating`
  column again, not the 0/1 `label` beside it.
  """
  model, card = _load(model_dir, say)
  trained = (card.data or {}).get("columns") or {}
  text_column = text_column or trained.get("text") or columns.INPUT_TEXT
  label_column = label_column or trained.get("label") or columns.INPUT_LABEL
  id_column = id_column or trained.get("id") or columns.INPUT_ID
  class_names = card.class_names
  label_map = label_map or card.label_map
  try:
    scheme = (LabelScheme.from_options(label_map=label_map) if label_map
              else LabelScheme(class_names=tuple(class_names)))
  except LabelError as e:
    raise data_lib.DataError(f"--label-map: {e}") from None
  if scheme.class_names != tuple(class_names):
    raise data_lib.DataError(
        f"--label-map classes {list(scheme.class_names)} are not the model's "
        f"{class_names}")
  labelled = data_lib.read_evaluation_set(
      data_path, split, text_column=text_column, label_column=label_column,
      id_column=id_column, labels=scheme, positional_ids=positional_ids)
  labelled = data_lib.sample(labelled, max_examples, seed=seed)
  scores = score_texts(model, labelled.texts, output=(
      contract.OUTPUT_PROBABILITY if card.binary
      else contract.OUTPUT_PROBABILITIES))
  result = metric_lib.classification_metrics(
      labelled.labels, scores, class_names=class_names,
      threshold=card.threshold)
  result["data"] = labelled.summary()
  result["model_fingerprint"] = card.model_fingerprint
  if out_dir is None:  # beside a local model, else in the working directory
    out_dir = (pathlib.Path(f"eval-{split}") if is_remote(str(model_dir))
               else pathlib.Path(model_dir) / f"eval-{split}")
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  write_json(out_dir / METRICS_FILE, result)
  plots.confusion_plot(result["confusion_matrix"]["rows_true_cols_predicted"],
                       class_names, out_dir / "confusion.png")
  if card.binary:
    plots.reliability_diagram(labelled.labels, scores,
                              out_dir / "reliability.png")
    plots.score_histogram(scores, out_dir / "score_histogram.png",
                          labels=labelled.labels, threshold=card.threshold,
                          class_names=class_names)
    plots.roc_plot(labelled.labels, scores, out_dir / "roc.png",
                   auc=result["roc_auc"])
  result["out_dir"] = str(out_dir)
  return result


def predict_texts(model_dir, texts: Sequence[str], *,
                  say: Callable[[str], None] = print
                  ) -> List[Tuple[float, str]]:
  """(score, class name) per text."""
  model, card = _load(model_dir, say)
  served = serve_texts(model, list(texts), (contract.OUTPUT_PROBABILITY,
                                            contract.OUTPUT_LABEL_ID))
  return [(float(score), card.class_names[int(label)])
          for score, label in zip(served[contract.OUTPUT_PROBABILITY],
                                  served[contract.OUTPUT_LABEL_ID], strict=True)]
