"""Labels users have: any two values, star ratings mapped to classes, and a
decision threshold chosen on validation or given. Tiny real models trained
on real IMDB reviews and their real 1-10 ratings."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import tensorflow as tf
import tensorflow_text  # noqa: F401

from evaluation.metrics import best_threshold
from pipeline.run import run as score
from reviewscore.cli import main
from train.data import reviews as data_lib
from train.data.labels import LabelError, LabelScheme
from train.run import train_and_export
from train.loops.trainer import TrainSettings

TINY = dict(batch_size=8, seq_length=64, checkpoint_every_steps=1000,
            truncation="head", pooling="cls", precision="float32", epochs=1)


@pytest.mark.parametrize("values, scheme, ids, names", [
    (["pos", "neg", "pos"], LabelScheme(), [1, 0, 1], ("neg", "pos")),
    (["good", "bad"], LabelScheme(), [1, 0], ("bad", "good")),
    (["yes", "no"], LabelScheme(class_names=("yes", "no")), [0, 1], ("yes", "no")),
    ([0, 1, 1], LabelScheme(), [0, 1, 1], ("neg", "pos")),
    ([0, 1], LabelScheme(class_names=("ham", "spam")), [0, 1], ("ham", "spam")),
    ([-1, 1, -1], LabelScheme(), [0, 1, 0], ("-1", "1")),
    ([True, False], LabelScheme(), [1, 0], ("neg", "pos")),
    ([1, 2, 3, 4, 5], LabelScheme.from_options(label_map="neg:<=2,pos:>=4"),
     [0, 0, -1, 1, 1], ("neg", "pos")),
    ([1.5, 9.0], LabelScheme.from_options(label_map="low:<5,high:>5"),
     [0, 1], ("low", "high")),
    # Three or more classes.
    ([5, 1, 3, 1], LabelScheme(), [2, 0, 1, 0], ("1", "3", "5")),
    (["b", "c", "a"], LabelScheme(), [1, 2, 0], ("a", "b", "c")),
    ([2, 0, 1], LabelScheme(class_names=("neg", "mixed", "pos")), [2, 0, 1],
     ("neg", "mixed", "pos")),
    ([1, 3, 5, 2], LabelScheme.from_options(label_map="n:<=2,m:=3,p:>=4"),
     [0, 1, 2, 0], ("n", "m", "p")),
])
def test_label_columns_become_two_classes(values, scheme, ids, names):
  class_ids, class_names = scheme.apply(pa.chunked_array([values]), "x")
  assert class_ids.tolist() == ids and class_names == names


@pytest.mark.parametrize("values, scheme, message", [
    (list(range(21)), LabelScheme(), "21 label values .* --label-map"),
    (["a", "a"], LabelScheme(), "one class only"),
    (["neg", "meh"], LabelScheme(class_names=("neg", "pos")),
     r"labels \['meh'\] are not among"),
    ([1, 2], LabelScheme(class_names=("a", "b")), r"must lie in \[0, 2\)"),
    (["a", "b"], LabelScheme.from_options(label_map="n:<=2,p:>=4"),
     "needs a numeric label column"),
    ([3], LabelScheme.from_options(label_map="n:<=3,p:>=3"),
     "more than one class"),
    ([2.5], LabelScheme(), "neither class names nor class ids"),
])
def test_labels_that_make_no_two_classes_are_refused(values, scheme, message):
  with pytest.raises(LabelError, match=message):
    scheme.apply(pa.chunked_array([values]), "x")


_NOT_A_RULE = "is not CLASS:CONDITION"
_ONE_CLASS = "names two or more different classes"


@pytest.mark.parametrize("spec, message", [
    ("neg<=2,pos>=4", _NOT_A_RULE), ("neg:<=2", _ONE_CLASS),
    ("a:<=2,a:>=4", _ONE_CLASS), ("a:<=2,b:=3,a:>=4", _ONE_CLASS),
    ("neg:~2,pos:>=4", _NOT_A_RULE)])
def test_malformed_label_maps_are_refused(spec, message):
  with pytest.raises(LabelError, match=message):
    LabelScheme.from_options(label_map=spec)


@pytest.fixture(scope="module")
def star_reviews(imdb_dir, tmp_path_factory):
  """A user's CSV: `body` and `stars` (IMDB's real 1-10 ratings), no ids."""
  root = tmp_path_factory.mktemp("stars")
  for split, per_class in (("train", 80), ("test", 20)):
    table = pq.read_table(imdb_dir / f"{split}.parquet",
                          columns=["text", "rating"])
    ratings = table["rating"].to_numpy()
    rows = np.concatenate([np.flatnonzero(ratings <= 4)[:per_class],
                           np.flatnonzero(ratings >= 7)[:per_class]])
    table = table.take(np.sort(rows)).rename_columns(["body", "stars"])
    pcsv.write_csv(table, root / f"{split}.csv")
  return root


@pytest.mark.slow
def test_star_ratings_train_score_and_evaluate_through_a_label_map(
    star_reviews, tiny_encoder_dir, tmp_path):
  """Catches: a label map not applied, dropped rows not counted, the map not
  recorded in the card (so evaluate would read stars as class ids), and
  scored labels named otherwise than the card's classes."""
  out = tmp_path / "model"
  result = CliRunner().invoke(main, [
      "train", "--data", str(star_reviews), "--encoder", str(tiny_encoder_dir),
      "--out", str(out), "--text-column", "body", "--label-column", "stars",
      "--positional-ids", "--label-map", "bad:<=2,good:>=9",
      "--threshold", "0.5", *[f"--{k.replace('_', '-')}={v}"
                              for k, v in TINY.items()
                              if k != "checkpoint_every_steps"]])
  assert result.exit_code == 0, result.output
  card = json.loads((out / "model_card.json").read_text())
  assert card["class_names"] == ["bad", "good"]
  assert card["label_map"] == "bad:<=2,good:>=9"
  stars = pcsv.read_csv(star_reviews / "train.csv")["stars"].to_numpy()
  kept = int(((stars <= 2) | (stars >= 9)).sum())
  assert 0 < kept < len(stars)
  data = card["data"]
  assert (data["train"]["rows"] + data["validation"]["rows"]) == kept
  test_stars = pcsv.read_csv(star_reviews / "test.csv")["stars"].to_numpy()
  test_kept = int(((test_stars <= 2) | (test_stars >= 9)).sum())
  assert data["test"]["rows"] == test_kept
  assert data["dropped_by_label_map"] == (len(stars) - kept) + (
      len(test_stars) - test_kept)
  assert "matched no class of the label map" in result.output

  scored = score([f"--input={star_reviews / 'test.csv'}", f"--model={out}",
                  f"--output={tmp_path / 'scores' / 's'}",
                  "--text-column=body", "--positional-ids",
                  "--carry-columns=stars", "--precision=float32"],
                 save_main_session=False, echo=lambda m: None)
  table = pq.read_table(scored.score_files)
  assert table.num_rows == 40
  assert set(table["label"].to_pylist()) <= {"bad", "good"}
  assert all((label == "good") == (score_ >= 0.5) for label, score_ in
             zip(table["label"].to_pylist(), table["score"].to_pylist(),
                 strict=True))

  # The card's columns: `stars` through the map, not a `label` column.
  evaluated = CliRunner().invoke(main, [
      "evaluate", "--model", str(out), "--data", str(star_reviews / "test.csv"),
      "--positional-ids", "--out", str(tmp_path / "eval")])
  assert evaluated.exit_code == 0, evaluated.output
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert metrics["count"] == test_kept
  assert metrics["data"]["dropped_by_label_map"] == len(test_stars) - test_kept
  assert metrics["confusion_matrix"]["labels"] == ["bad", "good"]
  assert "rows true bad/good" in evaluated.output


@pytest.mark.slow
def test_threshold_is_chosen_on_validation_and_served(
    small_named_labels, tiny_encoder_dir, tmp_path):
  """Catches: a threshold chosen on test (or not at all), a card threshold
  the SavedModel's own labels ignore, and class names not from the data."""
  card = train_and_export(
      data_path=small_named_labels, encoder=str(tiny_encoder_dir),
      out=tmp_path / "model", settings=TrainSettings(**TINY),
      progress=lambda m: None)
  assert card["class_names"] == ["negative", "positive"]
  assert card["training"]["threshold_from"] == "highest validation accuracy"
  # Recompute: the same validation rows, scored by the exported model.
  labelled = data_lib.read_labelled(small_named_labels, "train")
  _, validation = data_lib.split_train_validation(
      labelled, validation_fraction=TrainSettings().validation_fraction,
      seed=TrainSettings().seed)
  model = tf.saved_model.load(str(tmp_path / "model" / "saved_model"))
  served = model.signatures["serving_default"](text=tf.constant(validation.texts))
  probabilities = served["probability"].numpy()
  assert card["threshold"] == round(best_threshold(validation.labels,
                                                   probabilities), 4)
  assert (served["label_id"].numpy() ==
          (probabilities >= card["threshold"])).all()
  assert card["metrics"]["validation"]["accuracy"] == pytest.approx(
      np.mean((probabilities >= card["threshold"]) == (validation.labels == 1)),
      abs=1e-6)

  given = train_and_export(
      data_path=small_named_labels, encoder=str(tiny_encoder_dir),
      out=tmp_path / "given", settings=TrainSettings(**TINY), threshold=0.3,
      progress=lambda m: None)
  assert given["threshold"] == 0.3
  assert given["training"]["threshold_from"] == "given"


@pytest.fixture(scope="module")
def small_named_labels(imdb_dir, tmp_path_factory):
  """Parquet with labels spelled `negative`/`positive`, as many users have."""
  root = tmp_path_factory.mktemp("named")
  table = pq.read_table(imdb_dir / "train.parquet",
                        columns=["review_id", "text", "label"])
  labels = table["label"].to_numpy()
  rows = np.concatenate([np.flatnonzero(labels == c)[:60] for c in (0, 1)])
  table = table.take(np.sort(rows))
  names = pa.array(np.where(table["label"].to_numpy() == 1, "positive",
                            "negative"))
  pq.write_table(table.set_column(2, "label", names), root / "train.parquet")
  return root


@pytest.mark.slow
def test_star_ratings_as_classes_of_their_own(star_reviews, tiny_encoder_dir,
                                              tmp_path):
  """Catches: more than two classes refused or squeezed into a sigmoid, a
  card without its classes, scores that are not one probability per class
  (summing to 1, the likeliest one named), and evaluate or report treating
  the model as binary."""
  out = tmp_path / "model"
  card = train_and_export(
      data_path=star_reviews, encoder=str(tiny_encoder_dir), out=out,
      settings=TrainSettings(**TINY), text_column="body", label_column="stars",
      positional_ids=True, progress=lambda m: None)
  stars = sorted(set(pcsv.read_csv(star_reviews / "train.csv")["stars"]
                     .to_pylist()))
  assert len(stars) > 2
  assert card["class_names"] == [str(s) for s in stars]
  assert card["threshold"] is None
  per_class = card["metrics"]["test"]["per_class"]
  assert sorted(per_class) == sorted(card["class_names"])
  assert sum(c["support"] for c in per_class.values()) == \
      card["metrics"]["test"]["count"]

  prefix = tmp_path / "scores" / "s"
  scored = score([f"--input={star_reviews / 'test.csv'}", f"--model={out}",
                  f"--output={prefix}", "--text-column=body", "--positional-ids",
                  "--carry-columns=stars,body", "--precision=float32"],
                 save_main_session=False, echo=lambda m: None)
  table = pq.read_table(scored.score_files)
  class_scores = np.asarray(table["class_scores"].to_pylist())
  assert class_scores.shape == (40, len(stars))
  np.testing.assert_allclose(class_scores.sum(axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(table["score"].to_numpy(),
                             class_scores.max(axis=1), atol=1e-6)
  assert table["label"].to_pylist() == [card["class_names"][i] for i in
                                        class_scores.argmax(axis=1)]
  # Self-training reads such a run (and an ensemble of it) by class.
  from train.data.pseudo_labels import read_pseudo_labels
  label_of = dict(zip(table["review_id"].to_pylist(),
                      table["label_id"].to_pylist(), strict=True))
  for runs in ([prefix], [prefix, prefix]):
    pseudo = read_pseudo_labels([str(p) for p in runs],
                                class_names=card["class_names"],
                                text_column="body", min_confidence=0.0,
                                soft=True)
    assert len(pseudo) == 40
    assert pseudo.targets.tolist() == [label_of[i] for i in pseudo.ids]
    assert sum(pseudo.summary["kept_per_class"]) == 40

  result = CliRunner().invoke(main, ["report", str(prefix), "--labels", "stars",
                                     "--out", str(tmp_path / "report")])
  assert result.exit_code == 0, result.output
  summary = json.loads((tmp_path / "report" / "summary.json").read_text())
  truth = np.asarray(table["stars"].to_pylist())
  expected = np.mean(np.asarray(stars)[class_scores.argmax(axis=1)] == truth)
  assert summary["labelled"]["accuracy"] == pytest.approx(expected)
  assert sorted(summary["labelled"]["per_class"]) == sorted(card["class_names"])

  evaluated = CliRunner().invoke(main, [
      "evaluate", "--model", str(out), "--data", str(star_reviews / "test.csv"),
      "--text-column", "body", "--label-column", "stars", "--positional-ids",
      "--out", str(tmp_path / "eval")])
  assert evaluated.exit_code == 0, evaluated.output
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert metrics["accuracy"] == pytest.approx(expected)
  assert "macro F1" in evaluated.output
