"""Metrics over any number of scored rows in fixed memory.

Scores fold into 10,000-bin histograms per true class, so `report` can read
an archive of any size in record batches; the figures come from the same
functions as in-memory evaluation (`evaluation.metrics`), with ROC AUC and
calibration exact to the bin width (1e-4 in score).
"""
import dataclasses
from typing import Optional

import numpy as np

from evaluation import metrics

HISTOGRAM_BINS = 10_000
_CENTRES = (np.arange(HISTOGRAM_BINS) + 0.5) / HISTOGRAM_BINS
_COARSE = metrics.calibration_bin_of(_CENTRES)


def _label_counts(class_names, predicted: np.ndarray) -> dict:
  rows = int(predicted.sum())
  counts = {name: int(n) for name, n in zip(class_names, predicted, strict=True)}
  return {"rows": rows, "predicted_label_counts": counts,
          "predicted_label_shares": {k: v / max(rows, 1)
                                     for k, v in counts.items()}}


@dataclasses.dataclass
class ScoreCounters:
  """Fixed-size running counts over any number of scored rows."""
  threshold: float
  class_names: tuple
  by_class: np.ndarray = None  # [2, bins]: score histogram per true label
  unlabelled: np.ndarray = None  # [bins]: rows with no known label
  predicted: np.ndarray = None  # [classes]: predicted-label counts
  log_loss_sum: float = 0.0

  def __post_init__(self):
    self.by_class = np.zeros((2, HISTOGRAM_BINS), np.int64)
    self.unlabelled = np.zeros(HISTOGRAM_BINS, np.int64)
    self.predicted = np.zeros(len(self.class_names), np.int64)

  @staticmethod
  def _bins(scores: np.ndarray) -> np.ndarray:
    return np.clip((scores * HISTOGRAM_BINS).astype(np.int64), 0,
                   HISTOGRAM_BINS - 1)

  def add(self, scores: np.ndarray, label_ids: np.ndarray,
          true_labels: Optional[np.ndarray]) -> None:
    """One batch: scores, predicted label ids, true labels (-1 unknown)."""
    self.predicted += np.bincount(label_ids, minlength=len(self.class_names))
    bins = self._bins(scores)
    if true_labels is None:
      self.unlabelled += np.bincount(bins, minlength=HISTOGRAM_BINS)
      return
    known = true_labels >= 0
    self.unlabelled += np.bincount(bins[~known], minlength=HISTOGRAM_BINS)
    for label in (0, 1):
      rows = known & (true_labels == label)
      self.by_class[label] += np.bincount(bins[rows], minlength=HISTOGRAM_BINS)
    self.log_loss_sum += metrics.log_loss_sum(true_labels[known], scores[known])

  @property
  def rows(self) -> int:
    return int(self.predicted.sum())

  @property
  def labelled(self) -> int:
    return int(self.by_class.sum())

  def all_scores_histogram(self) -> np.ndarray:
    return self.by_class.sum(axis=0) + self.unlabelled

  def _quantile(self, q: float) -> float:
    cumulative = np.cumsum(self.all_scores_histogram())
    index = int(np.searchsorted(cumulative, q * cumulative[-1]))
    return (index + 0.5) / HISTOGRAM_BINS

  def labelled_metrics(self) -> Optional[dict]:
    """The metrics of `evaluation.metrics.binary_metrics`, plus the ROC
    points and calibration bins for plots; None without labelled rows."""
    if not self.labelled:
      return None
    negatives, positives = self.by_class
    cut = int(round(self.threshold * HISTOGRAM_BINS))
    confusion = [[int(negatives[:cut].sum()), int(negatives[cut:].sum())],
                 [int(positives[:cut].sum()), int(positives[cut:].sum())]]
    fpr, tpr = metrics.roc_from_counts(positives[::-1], negatives[::-1])
    both = negatives + positives
    calibration = metrics.calibration_from_sums(
        np.bincount(_COARSE, weights=both, minlength=metrics.CALIBRATION_BINS),
        np.bincount(_COARSE, weights=both * _CENTRES,
                    minlength=metrics.CALIBRATION_BINS),
        np.bincount(_COARSE, weights=positives,
                    minlength=metrics.CALIBRATION_BINS))
    auc = (metrics.area_under(fpr, tpr)
           if positives.sum() and negatives.sum() else None)
    figures = metrics.assemble(
        confusion=confusion, class_names=self.class_names,
        threshold=self.threshold, auc=auc,
        log_loss=self.log_loss_sum / self.labelled, calibration=calibration)
    figures["labelled_rows"] = figures.pop("count")
    figures["_roc"] = (fpr, tpr)
    figures["_reliability"] = {key: calibration[key] for key in
                               ("mean_score", "positive_rate", "count")}
    return figures

  def summary(self) -> dict:
    histogram = self.all_scores_histogram()
    return {
        **_label_counts(self.class_names, self.predicted),
        "score_mean": float((histogram * _CENTRES).sum() / max(self.rows, 1)),
        "score_quantiles": {q: round(self._quantile(float(q)), 4)
                            for q in ("0.05", "0.25", "0.5", "0.75", "0.95")},
    }


@dataclasses.dataclass
class ClassCounters:
  """Fixed-size running counts for a model over three or more classes: a
  [true, predicted] confusion matrix, predicted-label counts and the
  log-loss sum of the true classes' probabilities."""
  class_names: tuple
  confusion: np.ndarray = None
  predicted: np.ndarray = None
  score_sum: float = 0.0
  log_loss_sum: float = 0.0

  def __post_init__(self):
    classes = len(self.class_names)
    self.confusion = np.zeros((classes, classes), np.int64)
    self.predicted = np.zeros(classes, np.int64)

  def add(self, scores: np.ndarray, label_ids: np.ndarray,
          true_labels: Optional[np.ndarray],
          class_scores: Optional[np.ndarray] = None) -> None:
    """One batch: the likeliest class's probability, its id, true labels
    (-1 unknown) and [rows, classes] probabilities (for the log loss)."""
    classes = len(self.class_names)
    self.predicted += np.bincount(label_ids, minlength=classes)
    self.score_sum += float(np.sum(scores, dtype=np.float64))
    if true_labels is None:
      return
    known = true_labels >= 0
    self.confusion += metrics.multiclass_confusion(
        true_labels[known], label_ids[known], classes)
    if class_scores is not None:
      self.log_loss_sum += metrics.class_log_loss_sum(true_labels[known],
                                                      class_scores[known])

  @property
  def rows(self) -> int:
    return int(self.predicted.sum())

  @property
  def labelled(self) -> int:
    return int(self.confusion.sum())

  def labelled_metrics(self) -> Optional[dict]:
    if not self.labelled:
      return None
    figures = metrics.multiclass_from_confusion(
        self.confusion, self.class_names,
        log_loss=self.log_loss_sum / self.labelled)
    figures["labelled_rows"] = figures.pop("count")
    return figures

  def summary(self) -> dict:
    return {**_label_counts(self.class_names, self.predicted),
            "score_mean": self.score_sum / max(self.rows, 1)}
