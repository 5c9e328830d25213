"""Self-training: a teacher scores unlabelled reviews through the Beam
pipeline, and `train --pseudo-labels` trains a student on its confident
rows; the held-out splits can never be trained on this way."""
import glob
import json
import math
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reviewscore.cli import main


def _labelled_folder(imdb_dir, folder, per_class):
  folder.mkdir(parents=True, exist_ok=True)
  for split, n in (("train", per_class), ("test", 10)):
    table = pq.read_table(imdb_dir / f"{split}.parquet",
                          columns=["review_id", "text", "label"])
    labels = table["label"].to_numpy()
    rows = np.concatenate([np.flatnonzero(labels == c)[:n] for c in (0, 1)])
    pq.write_table(table.take(np.sort(rows)), folder / f"{split}.parquet")
  return folder


def _teacher_scores(model_dir, source, prefix, *extra):
  from pipeline.run import run
  return run([f"--input={source}", f"--model={model_dir}",
              f"--output={prefix}", "--precision=float32", *extra],
             save_main_session=False, echo=lambda m: None)


@pytest.fixture(scope="module")
def unlabelled_scores(tiny_model_dir, imdb_dir, tmp_path_factory):
  folder = tmp_path_factory.mktemp("unsup")
  unsup = folder / "unsup.parquet"
  pq.write_table(pq.read_table(imdb_dir / "unsup.parquet",
                               columns=["review_id", "text"]).slice(0, 120),
                 unsup)
  prefix = str(folder / "scores" / "unsup")
  _teacher_scores(tiny_model_dir, unsup, prefix, "--carry-columns=text")
  return prefix


def _train(data, encoder, out, *extra):
  return CliRunner().invoke(main, [
      "train", "--data", str(data), "--encoder", str(encoder), "--out",
      str(out), "--seq-length", "64", "--truncation", "head", "--batch-size",
      "8", "--epochs", "1", "--precision", "float32", "--pooling", "cls",
      "--validation-fraction", "0.25", *extra])


def test_a_student_trains_on_the_teachers_confident_rows(
    tiny_model_dir, tiny_encoder_dir, imdb_dir, unlabelled_scores, tmp_path):
  scores = pq.read_table(
      sorted(glob.glob(unlabelled_scores + "-?????-of-?????.parquet")))
  probability = scores["score"].to_numpy()
  # A bound that keeps some rows and drops others, whatever the teacher
  # learnt on this CPU: halfway across the widest gap between the teacher's
  # confidences in the middle half of their range, so that no confidence
  # lies near it and the filter has work to do.
  confidences = np.unique(np.maximum(probability, 1 - probability))
  assert len(confidences) >= 4, confidences  # a teacher, not a constant
  middle = confidences[len(confidences) // 4: 3 * len(confidences) // 4 + 1]
  widest = int(np.argmax(np.diff(middle)))
  confidence = float((middle[widest] + middle[widest + 1]) / 2)
  confident = np.maximum(probability, 1 - probability) >= confidence
  assert 0 < confident.sum() < len(probability)

  data = _labelled_folder(imdb_dir, tmp_path / "data", per_class=20)
  out = tmp_path / "student"
  result = _train(data, tiny_encoder_dir, out, "--pseudo-labels",
                  unlabelled_scores, "--pseudo-label-confidence",
                  str(confidence))
  assert result.exit_code == 0, result.output
  card = json.loads((out / "model_card.json").read_text())
  pseudo = card["data"]["pseudo_labels"]
  assert pseudo["kept"] == int(confident.sum())
  assert pseudo["scored"] == 120 and pseudo["soft"] is True
  assert pseudo["teachers"] == [json.loads(
      (tiny_model_dir / "model_card.json").read_text())["model_fingerprint"]]
  # The student's epoch covers the labelled training split and the kept rows.
  labelled_train = card["data"]["train"]["rows"]
  assert card["training"]["total_steps"] == math.ceil(
      (labelled_train + pseudo["kept"]) / 8)
  # Validation and test stay labelled reviews only.
  assert card["data"]["validation"]["rows"] == 10
  assert card["data"]["test"]["rows"] == 20


def _rescored_copy(prefix, new_prefix, rescore, threshold=None):
  """Another teacher's output over the same reviews: `prefix`'s rows in
  reverse order, scores replaced by `rescore(review ids)`, and its decision
  threshold by `threshold` where given."""
  from schemas import columns, outputs
  table = pq.read_table(sorted(glob.glob(prefix + "-?????-of-?????.parquet")))
  table = table.take(np.arange(table.num_rows)[::-1])
  scores = pa.array(rescore(table["review_id"].to_pylist()), pa.float32())
  table = table.set_column(table.schema.get_field_index("score"),
                           table.schema.field("score"), scores)
  if threshold is not None:
    table = table.replace_schema_metadata({
        **table.schema.metadata,
        columns.METADATA_THRESHOLD: str(threshold).encode()})
  pathlib.Path(new_prefix).parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(table, new_prefix + "-00000-of-00001.parquet")
  manifest = json.loads(pathlib.Path(outputs.manifest_path(prefix)).read_text())
  manifest["counts"]["scored"] = table.num_rows
  pathlib.Path(outputs.manifest_path(new_prefix)).write_text(json.dumps(manifest))


def test_several_teachers_label_with_their_mean_probability(
    unlabelled_scores, tiny_model_dir, tmp_path):
  from train.data.pseudo_labels import read_pseudo_labels
  from train.data.reviews import DataError
  first = pq.read_table(sorted(glob.glob(unlabelled_scores + "-?????-of-?????.parquet")))
  score_of = dict(zip(first["review_id"].to_pylist(),
                      first["score"].to_pylist(), strict=True))
  # A second teacher sure of the opposite half the time: the mean decides.
  other = {i: (0.99 if n % 2 else 0.01) for n, i in enumerate(sorted(score_of))}
  second = str(tmp_path / "second" / "unsup")
  _rescored_copy(unlabelled_scores, second, lambda ids: [other[i] for i in ids],
                 threshold=0.3)

  both = read_pseudo_labels([unlabelled_scores, second],
                            class_names=["neg", "pos"], min_confidence=0.0,
                            soft=True)
  from schemas import outputs
  card = json.loads((tiny_model_dir / "model_card.json").read_text())
  # Labels at the mean of the two runs' thresholds, as served: in float32.
  threshold = np.float32((card["threshold"] + 0.3) / 2)
  assert len(both) == 120
  mean = np.array([(score_of[i] + other[i]) / 2 for i in both.ids])
  np.testing.assert_allclose(both.targets, mean, rtol=1e-6)
  assert both.label_ids.tolist() == (mean >= threshold).astype(int).tolist()
  assert 0 < both.label_ids.sum() < 120
  assert both.summary["teachers"] == [card["model_fingerprint"]] * 2

  confident = read_pseudo_labels([unlabelled_scores, second],
                                 class_names=["neg", "pos"],
                                 min_confidence=0.7, soft=False)
  sure = np.maximum(mean, 1 - mean) >= 0.7
  assert 0 < sure.sum() < 120
  assert confident.ids == [i for i, s in zip(both.ids, sure, strict=True) if s]
  assert confident.targets.tolist() == (mean[sure] >= threshold).astype(
      float).tolist()

  # Runs over other reviews, or with ids that repeat, cannot be matched.
  for name, rows, message in (("fewer", np.arange(1, 120), "other reviews"),
                              ("twice", np.r_[0:120, 5], "ids repeat")):
    prefix = str(tmp_path / name / "unsup")
    _rescored_copy(unlabelled_scores, prefix, lambda ids: [0.5] * len(ids))
    shard = prefix + "-00000-of-00001.parquet"
    pq.write_table(pq.read_table(shard).take(rows), shard)
    manifest = json.loads(pathlib.Path(outputs.manifest_path(prefix)).read_text())
    manifest["counts"]["scored"] = len(rows)
    pathlib.Path(outputs.manifest_path(prefix)).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=message):
      read_pseudo_labels([unlabelled_scores, prefix], class_names=["neg", "pos"],
                         min_confidence=0.0, soft=True)


def test_pseudo_labels_need_the_text_and_the_same_classes(
    tiny_model_dir, tiny_encoder_dir, imdb_dir, tmp_path):
  unsup = tmp_path / "u.parquet"
  pq.write_table(pq.read_table(imdb_dir / "unsup.parquet",
                               columns=["review_id", "text"]).slice(0, 30), unsup)
  prefix = str(tmp_path / "s" / "no-text")
  _teacher_scores(tiny_model_dir, unsup, prefix)
  data = _labelled_folder(imdb_dir, tmp_path / "data", per_class=20)
  # Scores without the text: read back by id from the run's own input.
  from train.data.pseudo_labels import read_pseudo_labels
  back = read_pseudo_labels(prefix, class_names=["neg", "pos"],
                            min_confidence=0.0, soft=True)
  texts = dict(zip(*(pq.read_table(unsup)[name].to_pylist()
                     for name in ("review_id", "text")), strict=True))
  assert len(back) == 30
  assert back.texts == [texts[i] for i in back.ids]
  # Rows left out (as held-out reviews are) leave the summary's counts true.
  scores = pq.read_table(sorted(glob.glob(prefix + "-?????-of-?????.parquet")))
  label_of = dict(zip(scores["review_id"].to_pylist(),
                      scores["label_id"].to_pylist(), strict=True))
  fewer = back.without(np.arange(len(back)) % 3 != 0)
  assert fewer.summary["kept"] == len(fewer) == 20
  assert fewer.summary["kept_per_class"] == np.bincount(
      [label_of[i] for i in fewer.ids], minlength=2).tolist()
  # ...unless that input changed since (same ids, other texts: rotated)...
  from train.data.reviews import DataError
  original = pq.read_table(unsup)
  rotated = original.set_column(1, "text", pa.array(
      original["text"].to_pylist()[1:] + original["text"].to_pylist()[:1]))
  pq.write_table(rotated, unsup)
  with pytest.raises(DataError, match="changed since it was scored"):
    read_pseudo_labels(prefix, class_names=["neg", "pos"], min_confidence=0.0,
                       soft=True)
  # ...or is gone.
  unsup.unlink()
  result = _train(data, tiny_encoder_dir, tmp_path / "m", "--pseudo-labels",
                  prefix, "--pseudo-label-confidence", "0")
  assert result.exit_code == 1
  assert "--carry-columns text" in result.output
  # A teacher sure of nothing at the confidence asked for: said, not a crash.
  sure = _train(data, tiny_encoder_dir, tmp_path / "m1", "--pseudo-labels",
                prefix, "--pseudo-label-confidence", "1")
  assert sure.exit_code == 1 and "lower --pseudo-label-confidence" in sure.output

  unfinished = _train(data, tiny_encoder_dir, tmp_path / "m2",
                      "--pseudo-labels", str(tmp_path / "s" / "nothing"))
  assert unfinished.exit_code == 1 and "no complete scoring output" in unfinished.output

  stars = tmp_path / "stars"
  stars.mkdir()
  table = pq.read_table(data / "train.parquet")
  pq.write_table(table.set_column(2, "label", pa.array(
      ["bad" if v == 0 else "good" for v in table["label"].to_pylist()])),
                 stars / "train.parquet")
  other = _train(stars, tiny_encoder_dir, tmp_path / "m3", "--pseudo-labels",
                 str(tmp_path / "s" / "no-text"))
  assert other.exit_code == 1 and "classes" in other.output


def test_scores_of_the_test_split_are_refused_as_pseudo_labels(
    tiny_model_dir, tiny_encoder_dir, imdb_dir, tmp_path):
  data = _labelled_folder(imdb_dir, tmp_path / "data", per_class=20)
  prefix = str(tmp_path / "s" / "test")
  _teacher_scores(tiny_model_dir, data / "test.parquet", prefix,
                  "--carry-columns=text")
  result = _train(data, tiny_encoder_dir, tmp_path / "m", "--pseudo-labels",
                  prefix, "--pseudo-label-confidence", "0")
  assert result.exit_code == 1
  assert "never the ones that measure the model" in result.output
