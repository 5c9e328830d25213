"""PNG figures for numbers people would rather look at than read."""
import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; workers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.metrics import calibration_bins, roc_curve  # noqa: E402


def _save(fig, path) -> pathlib.Path:
  path = pathlib.Path(path)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def histogram_from_counts(edges, counts, path, *, per_class=None,
                          threshold: float = 0.5,
                          class_names: Sequence[str] = ("neg", "pos")):
  """Score histogram from bin counts (per true class when known)."""
  fig, ax = plt.subplots(figsize=(6, 4))
  widths = np.diff(edges)
  if per_class is None:
    ax.bar(edges[:-1], counts, width=widths, align="edge", color="tab:blue")
  else:
    for label, colour in ((0, "tab:red"), (1, "tab:green")):
      ax.bar(edges[:-1], per_class[label], width=widths, align="edge",
             alpha=0.6, label=f"true {class_names[label]}", color=colour)
    ax.legend()
  ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
  ax.set(xlabel=f"score (probability of {class_names[1]})", ylabel="reviews",
         title=f"Score distribution ({int(np.sum(counts)):,} reviews)")
  return _save(fig, path)


def score_histogram(scores, path, *, labels=None, threshold: float = 0.5,
                    bins: int = 50, class_names: Sequence[str] = ("neg", "pos")):
  """Histogram of scores (split by true label when labels are known)."""
  edges = np.linspace(0, 1, bins + 1)
  scores = np.asarray(scores)
  per_class = None
  if labels is not None:
    labels = np.asarray(labels)
    per_class = [np.histogram(scores[labels == k], edges)[0] for k in (0, 1)]
  return histogram_from_counts(edges, np.histogram(scores, edges)[0], path,
                               per_class=per_class, threshold=threshold,
                               class_names=class_names)


def reliability_from_bins(mean_score, positive_rate, path):
  """Observed positive rate against mean score per bin (calibration)."""
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
  ax.plot(mean_score, positive_rate, marker="o", label="model")
  ax.set(xlabel="mean score in bin", ylabel="fraction positive",
         xlim=(0, 1), ylim=(0, 1), title="Reliability diagram")
  ax.legend(loc="upper left")
  return _save(fig, path)


def reliability_diagram(labels, scores, path, *, bins: int = 10):
  calibration = calibration_bins(np.asarray(labels), np.asarray(scores), bins)
  return reliability_from_bins(calibration["mean_score"],
                               calibration["positive_rate"], path)


def roc_plot(labels, scores, path, *, auc=None):
  fpr, tpr = roc_curve(np.asarray(labels), np.asarray(scores))
  return roc_from_curve(fpr, tpr, path, auc=auc)


def roc_from_curve(fpr, tpr, path, *, auc=None):
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.plot(fpr, tpr, label=f"AUC {auc:.4f}" if auc is not None else None)
  ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
  ax.set(xlabel="false positive rate", ylabel="true positive rate",
         title="ROC curve")
  if auc is not None:
    ax.legend(loc="lower right")
  return _save(fig, path)


def confusion_plot(matrix: Sequence[Sequence[int]], class_names, path):
  matrix = np.asarray(matrix)
  fig, ax = plt.subplots(figsize=(4, 4))
  ax.imshow(matrix, cmap="Blues")
  for (i, j), value in np.ndenumerate(matrix):
    ax.text(j, i, f"{value:,}", ha="center", va="center",
            color="white" if value > matrix.max() / 2 else "black")
  ax.set_xticks(range(len(class_names)), class_names)
  ax.set_yticks(range(len(class_names)), class_names)
  ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
  return _save(fig, path)


def label_shares(counts: dict, path):
  fig, ax = plt.subplots(figsize=(5, 3))
  names = list(counts)
  values = [counts[n] for n in names]
  ax.bar(names, values, color=["tab:red", "tab:green", "tab:grey"][:len(names)])
  total = max(sum(values), 1)
  for i, value in enumerate(values):
    ax.text(i, value, f"{value / total:.1%}", ha="center", va="bottom")
  ax.set(ylabel="reviews", title="Predicted label shares")
  return _save(fig, path)


def training_curves(history, path):
  """Loss and accuracy per epoch, training and validation."""
  epochs = [h["epoch"] for h in history]
  fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
  for ax, key, title in ((loss_ax, "loss", "Loss"), (acc_ax, "accuracy", "Accuracy")):
    ax.plot(epochs, [h[key] for h in history], marker="o", label="training")
    ax.plot(epochs, [h["val_" + key] for h in history], marker="o",
            label="validation")
    ax.set(xlabel="epoch", title=title)
    ax.set_xticks(epochs)
    ax.legend()
  return _save(fig, path)


def pretraining_curves(history, path):
  """Masked-wordpiece loss and accuracy by step: training (since the
  previous point) and held-out chunks."""
  fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
  trained = [h for h in history if "loss" in h]
  for ax, key, title in ((loss_ax, "loss", "Masked-wordpiece loss"),
                         (acc_ax, "accuracy", "Masked-wordpiece accuracy")):
    ax.plot([h["step"] for h in trained], [h[key] for h in trained],
            marker=".", label="training")
    ax.plot([h["step"] for h in history], [h["val_" + key] for h in history],
            marker="o", label="held out")
    ax.set(xlabel="step", title=title)
    ax.legend()
  return _save(fig, path)
