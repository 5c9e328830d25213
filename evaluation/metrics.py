"""Binary-classification metrics: one implementation of each figure.

Two callers feed it. Training and `evaluate` hold every score in memory and
call `binary_metrics`; `report` streams any number of scored rows through
fixed-size histograms (`evaluation.streaming`). Both reduce their scores to
the same sufficient statistics — a confusion matrix, positive and negative
counts per distinct score (descending), calibration sums, a log-loss sum —
and the functions here turn those into figures, so the two can only differ
by the histogram's binning.
"""
from typing import Dict, Optional, Sequence

import numpy as np

CALIBRATION_BINS = 10
_CLIP = 1e-7


def confusion_figures(tn: int, fp: int, fn: int, tp: int) -> Dict:
  """Accuracy, precision, recall and F1 of the positive class."""
  total = tn + fp + fn + tp
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"accuracy": (tp + tn) / total if total else None,
          "precision": precision, "recall": recall, "f1": f1}


def roc_from_counts(positives: np.ndarray, negatives: np.ndarray):
  """ROC points from counts per distinct score, highest score first.

  Rows sharing a score form one step, so the area under these points is the
  Mann-Whitney statistic with ties counted half.
  """
  tpr = np.concatenate([[0], np.cumsum(positives)]) / max(np.sum(positives), 1)
  fpr = np.concatenate([[0], np.cumsum(negatives)]) / max(np.sum(negatives), 1)
  return fpr, tpr


def area_under(fpr: np.ndarray, tpr: np.ndarray) -> float:
  return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def log_loss_sum(labels: np.ndarray, scores: np.ndarray) -> float:
  """Sum of the binary cross-entropy of each row (scores clipped)."""
  clipped = np.clip(np.asarray(scores, np.float64), _CLIP, 1 - _CLIP)
  positive = np.asarray(labels) == 1
  return float(-np.sum(np.where(positive, np.log(clipped), np.log1p(-clipped))))


def log_loss_from_logits(labels: np.ndarray, logits: np.ndarray) -> float:
  """Mean binary cross-entropy from logits, stable for large |logit|."""
  labels = np.asarray(labels, np.float64)
  logits = np.asarray(logits, np.float64)
  losses = (np.logaddexp(0.0, -np.abs(logits)) + np.maximum(logits, 0)
            - logits * labels)
  return float(losses.mean())


def softmax_log_loss(labels: np.ndarray, logits: np.ndarray) -> float:
  """Mean categorical cross-entropy from [n, classes] logits."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  rows = np.arange(len(logits))
  return float(-log_probabilities[rows, np.asarray(labels, np.int64)].mean())


def probabilities(logits: np.ndarray) -> np.ndarray:
  """The positive class's probability from [n] logits (the sigmoid), or
  every class's from [n, classes] (the softmax), in float64."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim == 2:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
  return 1.0 / (1.0 + np.exp(-logits))


def decisions(logits: np.ndarray, threshold: Optional[float]) -> np.ndarray:
  """Class ids a model decides from its logits: the positive class where
  its probability reaches `threshold` ([n] logits), else the likeliest."""
  logits = np.asarray(logits)
  if logits.ndim == 2:
    return logits.argmax(axis=1).astype(np.int64)
  return (probabilities(logits) >= threshold).astype(np.int64)


def calibration_bin_of(scores: np.ndarray, bins: int = CALIBRATION_BINS
                       ) -> np.ndarray:
  edges = np.linspace(0.0, 1.0, bins + 1)
  return np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)


def calibration_from_sums(counts, score_sums, positive_sums) -> Dict:
  """Per score bin: mean score, observed positive rate, count; and the ECE."""
  counts = np.asarray(counts, np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_score = np.where(counts > 0, np.asarray(score_sums) / counts, np.nan)
    positive_rate = np.where(counts > 0, np.asarray(positive_sums) / counts,
                             np.nan)
  gaps = np.abs(np.nan_to_num(mean_score) - np.nan_to_num(positive_rate))
  return {"edges": np.linspace(0.0, 1.0, len(counts) + 1).tolist(),
          "mean_score": mean_score.tolist(),
          "positive_rate": positive_rate.tolist(),
          "count": counts.astype(np.int64).tolist(),
          "expected_calibration_error":
              float(np.sum(counts * gaps) / max(counts.sum(), 1))}


def calibration_bins(labels: np.ndarray, scores: np.ndarray,
                     bins: int = CALIBRATION_BINS) -> Dict:
  scores = np.asarray(scores, np.float64)
  index = calibration_bin_of(scores, bins)
  return calibration_from_sums(
      np.bincount(index, minlength=bins),
      np.bincount(index, weights=scores, minlength=bins),
      np.bincount(index, weights=np.asarray(labels, np.float64),
                  minlength=bins))


def roc_curve(labels: np.ndarray, scores: np.ndarray):
  """False- and true-positive rates at every distinct score."""
  labels = np.asarray(labels).astype(bool)
  distinct, index = np.unique(-np.asarray(scores, np.float64),
                              return_inverse=True)
  positives = np.bincount(index, weights=labels, minlength=len(distinct))
  negatives = np.bincount(index, weights=~labels, minlength=len(distinct))
  return roc_from_counts(positives, negatives)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
  labels = np.asarray(labels).astype(bool)
  if labels.all() or not labels.any():
    return None
  return area_under(*roc_curve(labels, scores))


def assemble(*, confusion, class_names: Sequence[str], threshold: float,
             auc: Optional[float], log_loss: Optional[float],
             calibration: Dict) -> Dict:
  """The metrics dictionary every caller writes (cards, metrics.json,
  summary.json)."""
  (tn, fp), (fn, tp) = confusion
  return {
      "count": int(tn + fp + fn + tp),
      **confusion_figures(tn, fp, fn, tp),
      "roc_auc": auc,
      "log_loss": log_loss,
      "expected_calibration_error": calibration["expected_calibration_error"],
      "threshold": threshold,
      "confusion_matrix": {"labels": list(class_names),
                           "rows_true_cols_predicted": [[int(tn), int(fp)],
                                                        [int(fn), int(tp)]]},
  }


def binary_metrics(labels, scores, *, threshold: float = 0.5,
                   class_names: Sequence[str] = ("neg", "pos")) -> Dict:
  """Accuracy, precision, recall, F1, ROC AUC, log loss, confusion, ECE."""
  labels = np.asarray(labels).astype(np.int64)
  scores = np.asarray(scores, np.float64)
  predicted = scores >= threshold
  positive = labels == 1
  confusion = [[int(np.sum(~predicted & ~positive)),
                int(np.sum(predicted & ~positive))],
               [int(np.sum(~predicted & positive)),
                int(np.sum(predicted & positive))]]
  return assemble(
      confusion=confusion, class_names=class_names, threshold=threshold,
      auc=roc_auc(labels, scores),
      log_loss=log_loss_sum(labels, scores) / len(labels) if len(labels) else None,
      calibration=calibration_bins(labels, scores))


def best_threshold(labels, scores) -> float:
  """The decision threshold with the highest accuracy on (labels, scores).

  Candidates are the midpoints between consecutive distinct scores, so the
  threshold generalises rather than sitting on one review's score; ties go
  to the candidate nearest 0.5.
  """
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, np.float64)
  distinct = np.unique(scores)
  if len(distinct) < 2:
    return 0.5
  candidates = np.concatenate([[0.5], (distinct[1:] + distinct[:-1]) / 2.0])
  order = np.argsort(scores, kind="stable")
  sorted_scores, sorted_labels = scores[order], labels[order]
  # Rows below each candidate are predicted negative.
  below = np.searchsorted(sorted_scores, candidates, side="left")
  negatives_below = np.concatenate([[0], np.cumsum(~sorted_labels)])[below]
  positives_at_or_above = labels.sum() - np.concatenate(
      [[0], np.cumsum(sorted_labels)])[below]
  correct = negatives_below + positives_at_or_above
  best = np.flatnonzero(correct == correct.max())
  return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def multiclass_from_confusion(confusion, class_names: Sequence[str], *,
                              log_loss: Optional[float]) -> Dict:
  """Accuracy, per-class precision/recall/F1 and macro F1 from a
  [true, predicted] confusion matrix of any number of classes."""
  confusion = np.asarray(confusion, np.int64)
  total = int(confusion.sum())
  per_class = {}
  for index, name in enumerate(class_names):
    tp = int(confusion[index, index])
    predicted = int(confusion[:, index].sum())
    actual = int(confusion[index, :].sum())
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    per_class[name] = {
        "precision": precision, "recall": recall, "support": actual,
        "f1": (2 * precision * recall / (precision + recall)
               if precision + recall else 0.0)}
  return {
      "count": total,
      "accuracy": float(np.trace(confusion) / total) if total else None,
      "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
      "log_loss": log_loss,
      "per_class": per_class,
      "confusion_matrix": {"labels": list(class_names),
                           "rows_true_cols_predicted": confusion.tolist()},
  }


def class_log_loss_sum(labels, probabilities) -> float:
  """Sum of -log(probability of the true class) over [n, classes] rows."""
  labels = np.asarray(labels, np.int64)
  chosen = np.asarray(probabilities, np.float64)[np.arange(len(labels)), labels]
  return float(-np.sum(np.log(np.clip(chosen, _CLIP, 1.0))))


def multiclass_confusion(labels, predicted, classes: int) -> np.ndarray:
  return np.bincount(np.asarray(labels, np.int64) * classes +
                     np.asarray(predicted, np.int64),
                     minlength=classes * classes).reshape(classes, classes)


def multiclass_metrics(labels, probabilities, *,
                       class_names: Sequence[str]) -> Dict:
  """Metrics of a model over several classes from [n, classes] probabilities."""
  labels = np.asarray(labels, np.int64)
  probabilities = np.asarray(probabilities, np.float64)
  confusion = multiclass_confusion(labels, probabilities.argmax(axis=1),
                                   len(class_names))
  return multiclass_from_confusion(
      confusion, class_names,
      log_loss=(class_log_loss_sum(labels, probabilities) / len(labels)
                if len(labels) else None))


def classification_metrics(labels, probabilities, *, class_names,
                           threshold: Optional[float]) -> Dict:
  """`binary_metrics` for two classes ([n] positive-class probabilities),
  `multiclass_metrics` for more ([n, classes])."""
  if len(class_names) == 2:
    return binary_metrics(labels, probabilities, threshold=threshold,
                          class_names=class_names)
  return multiclass_metrics(labels, probabilities, class_names=class_names)
