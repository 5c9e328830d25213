"""The shared metrics and the model-card contract, checked against brute force."""
import json

import numpy as np
import pytest

from evaluation import metrics
from schemas import model_dir as contract


def _mann_whitney(labels, scores):
  """P(score of a positive > score of a negative), ties counted half."""
  positives = scores[labels == 1][:, None]
  negatives = scores[labels == 0][None, :]
  return float(np.mean((positives > negatives) + 0.5 * (positives == negatives)))


def test_roc_auc_is_the_pairwise_probability_with_ties_counted_half():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 400)
  # Coarse scores, so that many positives and negatives share a score.
  scores = np.round(rng.random(400) * 0.6 + labels * 0.3, 1)
  assert len(np.unique(scores)) < 12
  assert metrics.roc_auc(labels, scores) == pytest.approx(
      _mann_whitney(labels, scores), abs=1e-12)
  assert metrics.roc_auc(np.ones(5), np.arange(5.0)) is None


def test_binary_metrics_count_every_cell_of_the_confusion_matrix():
  labels = np.array([1, 1, 1, 0, 0, 0, 0])
  scores = np.array([0.9, 0.6, 0.2, 0.7, 0.4, 0.1, 0.5])
  result = metrics.binary_metrics(labels, scores, threshold=0.5,
                                  class_names=("bad", "good"))
  # 0.5 itself is predicted positive.
  assert result["confusion_matrix"] == {
      "labels": ["bad", "good"], "rows_true_cols_predicted": [[2, 2], [1, 2]]}
  assert result["accuracy"] == pytest.approx(4 / 7)
  assert result["precision"] == pytest.approx(2 / 4)
  assert result["recall"] == pytest.approx(2 / 3)
  expected_loss = -np.mean(np.where(labels == 1, np.log(scores),
                                    np.log(1 - scores)))
  assert result["log_loss"] == pytest.approx(expected_loss)
  assert metrics.log_loss_from_logits(
      labels, np.log(scores / (1 - scores))) == pytest.approx(expected_loss)


def test_best_threshold_maximises_accuracy_and_prefers_the_middle():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 300)
  # A model biased towards positive: the best cut lies well above 0.5.
  scores = np.clip(0.35 + 0.4 * labels + rng.normal(0, 0.12, 300), 0, 1)
  chosen = metrics.best_threshold(labels, scores)
  accuracy = lambda t: np.mean((scores >= t) == (labels == 1))  # noqa: E731
  brute_best = max(accuracy(t) for t in np.unique(scores))
  assert accuracy(chosen) == pytest.approx(brute_best)
  assert chosen > 0.5 and accuracy(chosen) > accuracy(0.5)
  # Perfectly separated at 0.5 already: the middle candidate is kept.
  assert metrics.best_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.5


def _card(**changes):
  card = {"format_version": 1, "model_name": "m", "model_fingerprint": "abc",
          "class_names": ["neg", "pos"], "threshold": 0.5, "seq_length": 128,
          "serving_precision": "float32", "precisions": ["float32"],
          "signatures": ["serving_default", "tokenize", "classify_tokens"],
          "metrics": {"test": {"accuracy": 0.9}}}
  card.update(changes)
  return card


def test_model_card_round_trips_and_names_what_is_wrong():
  card = contract.ModelCard.from_dict(_card())
  assert contract.ModelCard.from_json(card.to_json()) == card
  assert json.loads(card.to_json())["metrics"] == {"test": {"accuracy": 0.9}}
  assert card.classify_signatures("auto") == {"float32": "classify_tokens"}
  bad = {"missing keys ['threshold']": {"threshold": None},
         "seq_length: bad value 'long'": {"seq_length": "long"},
         "format_version 2 is not supported": {"format_version": 2},
         "expected two or more different class names": {"class_names": ["only"]},
         "no ['tokenize'] signature": {"signatures": ["classify_tokens"]},
         "is not among precisions": {"serving_precision": "bfloat16"}}
  for message, change in bad.items():
    values = _card(**change)
    if change.get("threshold", 0) is None:
      del values["threshold"]
    with pytest.raises(contract.ModelCardError, match=message.replace(
        "[", r"\[").replace("]", r"\]")):
      contract.ModelCard.from_dict(values)
  with pytest.raises(contract.ModelCardError, match="was not exported"):
    card.classify_signature("bfloat16")
