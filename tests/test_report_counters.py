"""The report's fixed-memory counters agree with exact metrics."""
import numpy as np
import pytest

from evaluation.metrics import binary_metrics
from evaluation.streaming import ScoreCounters


def test_counters_match_exact_metrics_in_any_batching():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 2, 20_000)
  # Informative, imperfect, calibrated-ish scores.
  scores = 1 / (1 + np.exp(-(labels * 2 - 1) * rng.gamma(2.0, 1.0, labels.size)
                           + rng.normal(0, 1.5, labels.size)))
  scores = scores.astype(np.float32)
  counters = ScoreCounters(threshold=0.5, class_names=("neg", "pos"))
  for chunk in np.array_split(np.arange(labels.size), 7):
    counters.add(scores[chunk], (scores[chunk] >= 0.5).astype(np.int64),
                 labels[chunk])
  exact = binary_metrics(labels, scores)
  streamed = counters.labelled_metrics()
  assert streamed["labelled_rows"] == counters.rows == 20_000
  assert streamed["accuracy"] == pytest.approx(exact["accuracy"], abs=1e-3)
  assert streamed["roc_auc"] == pytest.approx(exact["roc_auc"], abs=1e-3)
  assert streamed["log_loss"] == pytest.approx(exact["log_loss"], rel=1e-4)
  assert streamed["f1"] == pytest.approx(exact["f1"], abs=2e-3)
  summary = counters.summary()
  assert summary["predicted_label_counts"]["pos"] == int((scores >= 0.5).sum())
  assert summary["score_quantiles"]["0.5"] == pytest.approx(np.median(scores), abs=1e-3)


def test_unknown_labels_are_counted_but_not_scored():
  counters = ScoreCounters(threshold=0.5, class_names=("neg", "pos"))
  counters.add(np.array([0.9, 0.2, 0.7], np.float32), np.array([1, 0, 1]),
               np.array([1, -1, 0]))
  assert counters.rows == 3 and counters.labelled == 2
  assert counters.labelled_metrics()["accuracy"] == 0.5
