"""Binary-classification metrics from labels and positive-class scores.

Plain NumPy so that training's `evaluate`, the pipeline's `report` and the
benchmarks compute every figure the same way.
"""
from typing import Dict, Optional

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
  """Area under the ROC curve via ranks (ties share their mean rank)."""
  labels = np.asarray(labels).astype(bool)
  positives, negatives = labels.sum(), (~labels).sum()
  if positives == 0 or negatives == 0:
    return None
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = np.asarray(scores)[order]
  ranks = np.empty(len(scores), np.float64)
  # Average ranks over runs of equal scores.
  boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
  starts = np.concatenate([[0], boundaries])
  ends = np.concatenate([boundaries, [len(scores)]])
  for start, end in zip(starts, ends, strict=True):
    ranks[order[start:end]] = (start + end + 1) / 2.0
  return float((ranks[labels].sum() - positives * (positives + 1) / 2.0)
               / (positives * negatives))


def roc_curve(labels: np.ndarray, scores: np.ndarray):
  """False- and true-positive rates at every distinct threshold."""
  labels = np.asarray(labels).astype(bool)
  order = np.argsort(-np.asarray(scores), kind="mergesort")
  hits = labels[order]
  tps = np.concatenate([[0], np.cumsum(hits)])
  fps = np.concatenate([[0], np.cumsum(~hits)])
  return fps / max(fps[-1], 1), tps / max(tps[-1], 1)


def calibration_bins(labels: np.ndarray, scores: np.ndarray, bins: int = 10):
  """Per score bin: mean score, observed positive rate, count."""
  edges = np.linspace(0.0, 1.0, bins + 1)
  index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
  counts = np.bincount(index, minlength=bins)
  score_sum = np.bincount(index, weights=scores, minlength=bins)
  label_sum = np.bincount(index, weights=np.asarray(labels, np.float64),
                          minlength=bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    return {"edges": edges.tolist(),
            "mean_score": np.where(counts, score_sum / counts, np.nan).tolist(),
            "positive_rate": np.where(counts, label_sum / counts, np.nan).tolist(),
            "count": counts.tolist()}


def binary_metrics(labels, scores, *, threshold: float = 0.5) -> Dict:
  """Accuracy, precision, recall, F1, ROC AUC, log loss, confusion, ECE."""
  labels = np.asarray(labels).astype(np.int64)
  scores = np.asarray(scores, np.float64)
  predicted = (scores >= threshold).astype(np.int64)
  tp = int(np.sum((predicted == 1) & (labels == 1)))
  tn = int(np.sum((predicted == 0) & (labels == 0)))
  fp = int(np.sum((predicted == 1) & (labels == 0)))
  fn = int(np.sum((predicted == 0) & (labels == 1)))
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  clipped = np.clip(scores, 1e-7, 1 - 1e-7)
  log_loss = float(-np.mean(labels * np.log(clipped) +
                            (1 - labels) * np.log(1 - clipped))) if len(labels) else None
  calibration = calibration_bins(labels, scores)
  counts = np.asarray(calibration["count"], np.float64)
  gaps = np.abs(np.nan_to_num(np.asarray(calibration["mean_score"])) -
                np.nan_to_num(np.asarray(calibration["positive_rate"])))
  return {
      "count": int(len(labels)),
      "accuracy": float(np.mean(predicted == labels)) if len(labels) else None,
      "precision": precision, "recall": recall, "f1": f1,
      "roc_auc": roc_auc(labels, scores),
      "log_loss": log_loss,
      "expected_calibration_error": float(np.sum(counts * gaps) / max(counts.sum(), 1)),
      "threshold": threshold,
      "confusion_matrix": {"labels": ["neg", "pos"],
                           "rows_true_cols_predicted": [[tn, fp], [fn, tp]]},
  }
