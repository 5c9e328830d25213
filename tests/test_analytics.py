"""Scored output as analytics tools see it, and `reviewscore report`.

The DuckDB query and the pandas one-liner are read from README.md and run
here, so the README cannot drift from what works.
"""
import json
import pathlib
import re

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.run import run
from reviewscore.cli import main
from schemas import columns as c

README_PREFIX = "scores/test"
README_INPUT = "data/imdb/test.parquet"


@pytest.fixture(scope="module")
def scored(tiny_model_dir, imdb_dir, tmp_path_factory):
  """300 real test reviews (with two bad rows) scored into 2 shards."""
  root = tmp_path_factory.mktemp("analytics")
  table = pq.read_table(imdb_dir / "test.parquet")
  table = pa.concat_tables([table.slice(0, 150), table.slice(12500, 150)])
  texts = table["text"].to_pylist()
  texts[5], texts[200] = None, "   "
  table = table.set_column(table.schema.get_field_index("text"), "text",
                           pa.array(texts, pa.string()))
  pq.write_table(table, root / "test.parquet")
  prefix = str(root / "scores" / "test")
  result = run([f"--input={root / 'test.parquet'}", f"--model={tiny_model_dir}",
                f"--output={prefix}", "--num_shards=2",
                "--carry_columns=label:true_label,rating"],
               save_main_session=False, echo=lambda m: None)
  assert result.counts == {**result.counts, "read": 300, "scored": 298,
                           "dead_lettered": 2}
  return {"prefix": prefix, "input": root / "test.parquet", "root": root}


def _readme_block(language: str) -> str:
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  section = readme.split("## Analytics", 1)[1]
  return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def _localise(code: str, scored) -> str:
  return (code.replace(README_PREFIX, scored["prefix"])
          .replace(README_INPUT, str(scored["input"])))


def test_duckdb_reads_the_declared_types_and_metadata(scored, tiny_model_dir):
  prefix = scored["prefix"]
  described = duckdb.sql(
      f"DESCRIBE SELECT * FROM read_parquet('{prefix}-*.parquet')").fetchall()
  types = {name: kind for name, kind, *_ in described}
  assert types[c.REVIEW_ID] == "VARCHAR"
  assert types[c.SCORE] == "FLOAT"
  assert types[c.LABEL_NAME] == "VARCHAR"
  assert types[c.LABEL_ID] == "TINYINT"
  assert types[c.MODEL_FINGERPRINT] == "VARCHAR"
  assert types["true_label"] == "TINYINT" and types["rating"] == "TINYINT"
  rows = duckdb.sql(
      f"SELECT count(*), count(DISTINCT review_id) FROM read_parquet('{prefix}-*.parquet')"
  ).fetchall()[0]
  assert rows == (298, 298)  # error shards are not matched by the glob
  metadata = dict(duckdb.sql(
      f"SELECT key, value FROM parquet_kv_metadata('{prefix}-*.parquet')"
  ).fetchall())
  card = json.loads((tiny_model_dir / "model_card.json").read_text())
  assert float(metadata[c.METADATA_THRESHOLD]) == card["threshold"]
  assert metadata[c.METADATA_MODEL_FINGERPRINT].decode()
  assert metadata[c.METADATA_MODEL_NAME].decode() == "model"


def test_pandas_gets_the_declared_dtypes(scored, tiny_model_dir):
  namespace = {}
  exec(_localise(_readme_block("python"), scored), namespace)  # noqa: S102
  frame = namespace["scores"]
  assert len(frame) == 298
  assert frame[c.SCORE].dtype == np.float32
  assert frame[c.LABEL_ID].dtype == np.int8
  assert frame[c.REVIEW_ID].map(type).eq(str).all()
  shard = sorted((scored["root"] / "scores").glob("test-*.parquet"))[0]
  card = json.loads((tiny_model_dir / "model_card.json").read_text())
  assert pq.read_schema(shard).metadata[c.METADATA_THRESHOLD] == repr(
      card["threshold"]).encode()


def test_readme_duckdb_join_runs(scored, tiny_model_dir):
  """Catches: the README's join not running, matching rows of another
  review, or labels that disagree with the score and the card's threshold."""
  query = _localise(_readme_block("sql"), scored)
  joined = duckdb.sql(query).df()
  assert len(joined) == 298
  assert {"review_id", "score", "label", "rating", "text"} <= set(joined.columns)
  # The join matched every scored row to its own input row.
  source = pq.read_table(scored["input"]).to_pandas().set_index("review_id")
  assert joined["review_id"].is_unique
  assert (joined["text"].to_numpy() ==
          source.loc[joined["review_id"], "text"].to_numpy()).all()
  assert (joined["rating"].to_numpy() ==
          source.loc[joined["review_id"], "rating"].to_numpy()).all()
  # Each label is the card's decision on the score beside it.
  card = json.loads((tiny_model_dir / "model_card.json").read_text())
  positive = joined["score"].to_numpy() >= np.float32(card["threshold"])
  assert (joined["label_id"].to_numpy() == positive.astype(np.int8)).all()
  assert (joined["label"].to_numpy() ==
          np.asarray(card["class_names"])[joined["label_id"]]).all()
  assert 0 < positive.sum() < len(joined)  # both classes, or it proves little


def test_report_with_a_labels_column(scored, tmp_path):
  result = CliRunner().invoke(main, ["report", scored["prefix"], "--labels",
                                     "true_label", "--out", str(tmp_path)])
  assert result.exit_code == 0, result.output
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["rows"] == 298
  assert summary["counts"]["dead_lettered"] == 2
  frame = pd.concat(pd.read_parquet(p) for p in
                    sorted((scored["root"] / "scores").glob("test-*.parquet")))
  expected = float(np.mean(frame["label_id"] == frame["true_label"]))
  assert summary["labelled"]["accuracy"] == pytest.approx(expected)
  assert summary["labelled"]["labelled_rows"] == 298
  for png in ("score_histogram.png", "label_shares.png", "roc.png",
              "confusion.png", "reliability.png"):
    assert (tmp_path / png).read_bytes().startswith(b"\x89PNG"), png
  assert "accuracy" in result.output


def test_report_joins_labels_from_a_file(scored, tmp_path):
  """Catches: a labels file joined by position (shards are not in input
  order) or on the wrong column: its metrics must be those of the true
  labels carried beside each score."""
  runner = CliRunner()
  result = runner.invoke(main, ["report", scored["prefix"], "--labels",
                                str(scored["input"]), "--out", str(tmp_path / "file")])
  assert result.exit_code == 0, result.output
  with_file = json.loads((tmp_path / "file" / "summary.json").read_text())
  assert with_file["labelled"]["labelled_rows"] == 298
  carried = runner.invoke(main, ["report", scored["prefix"], "--labels",
                                 "true_label", "--out", str(tmp_path / "column")])
  assert carried.exit_code == 0, carried.output
  with_column = json.loads((tmp_path / "column" / "summary.json").read_text())
  for key in ("labelled_rows", "accuracy", "f1", "roc_auc", "log_loss",
              "confusion_matrix"):
    assert with_file["labelled"][key] == with_column["labelled"][key], key
  # And both are the accuracy of the rows as they stand on disk.
  frame = pd.concat(pd.read_parquet(p) for p in
                    sorted((scored["root"] / "scores").glob("test-*.parquet")))
  expected = float(np.mean(frame["label_id"] == frame["true_label"]))
  assert with_file["labelled"]["accuracy"] == pytest.approx(expected)
  # The reference is right: each carried label is the input's for that id.
  source = pq.read_table(scored["input"], columns=["review_id", "label"])
  by_id = dict(zip(source["review_id"].to_pylist(), source["label"].to_pylist()))
  assert [by_id[i] for i in frame["review_id"]] == frame["true_label"].tolist()
  # And a join by position would pair rows with other reviews' labels here.
  scored_ids = set(frame["review_id"])
  assert frame["review_id"].tolist() != [
      i for i in source["review_id"].to_pylist() if i in scored_ids]


def test_report_without_labels_and_on_a_missing_output(scored, tmp_path):
  runner = CliRunner()
  result = runner.invoke(main, ["report", scored["prefix"], "--out", str(tmp_path)])
  assert result.exit_code == 0, result.output
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert "labelled" not in summary and not (tmp_path / "roc.png").exists()
  assert sum(summary["predicted_label_counts"].values()) == 298
  missing = runner.invoke(main, ["report", str(tmp_path / "nothing"), "--out",
                                 str(tmp_path / "r")])
  assert missing.exit_code == 1
  assert "manifest" in missing.output and isinstance(missing.exception, SystemExit)
  assert len(missing.output.strip().splitlines()) == 1, missing.output
  assert not (tmp_path / "r").exists()


def test_report_on_damaged_outputs_and_odd_labels_is_one_line(scored,
                                                               tmp_path):
  """Catches: tracebacks from a damaged manifest, a shard gone, an --out
  that is a file and a labels file saved from a pandas categorical, and
  the model's own label column taken as true labels (accuracy 1.0)."""
  runner = CliRunner()

  def refused(*args):
    result = runner.invoke(main, ["report", *args])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output

  assert "is a column the model wrote" in refused(
      scored["prefix"], "--labels", "label", "--out", str(tmp_path / "own"))
  (tmp_path / "afile").write_text("x")
  assert "is a file, not a folder" in refused(
      scored["prefix"], "--out", str(tmp_path / "afile"))
  (tmp_path / "bad-manifest.json").write_text("{bad")
  assert "not a readable manifest" in refused(
      str(tmp_path / "bad"), "--out", str(tmp_path / "r1"))
  (tmp_path / "gone-manifest.json").write_text(json.dumps(
      {"run_id": "r0", "scores": [str(tmp_path / "gone-00000-of-00001.parquet")]}))
  assert "are gone (first " in refused(
      str(tmp_path / "gone"), "--out", str(tmp_path / "r2"))

  source = pq.read_table(scored["input"], columns=["review_id", "label"])
  names = pa.array(["neg" if v == 0 else "pos"
                    for v in source["label"].to_pylist()]).dictionary_encode()
  categorical = tmp_path / "categorical.parquet"
  pq.write_table(pa.table({"review_id": source["review_id"], "label": names}),
                 categorical)
  result = runner.invoke(main, ["report", scored["prefix"], "--labels",
                                str(categorical), "--out", str(tmp_path / "c")])
  assert result.exit_code == 0, result.output
  summary = json.loads((tmp_path / "c" / "summary.json").read_text())
  assert summary["labelled"]["labelled_rows"] == 298
  frame = pd.concat(pd.read_parquet(p) for p in
                    sorted((scored["root"] / "scores").glob("test-*.parquet")))
  assert summary["labelled"]["accuracy"] == pytest.approx(
      float(np.mean(frame["label_id"] == frame["true_label"])))


def test_report_refuses_labels_it_cannot_read_as_this_models_classes(
    scored, tmp_path):
  """Catches: star ratings read as class ids (a 1-star review counted as
  "pos", the rest left out), a labels file that joins no scored id giving
  a report without metrics and no word, and integer ids in a labels file
  never matching the scored (string) ids."""
  from pipeline.report import _label_map
  runner = CliRunner()
  stars = runner.invoke(main, ["report", scored["prefix"], "--labels", "rating",
                               "--out", str(tmp_path / "stars")])
  assert stars.exit_code == 1, stars.output
  assert "is not a class id of this model (0-1: neg, pos)" in stars.output
  assert len(stars.output.strip().splitlines()) == 1, stars.output
  others = tmp_path / "others.parquet"
  pq.write_table(pa.table({"review_id": ["nobody", "else"], "label": [0, 1]}),
                 others)
  unjoined = runner.invoke(main, ["report", scored["prefix"], "--labels",
                                  str(others), "--out", str(tmp_path / "none")])
  assert unjoined.exit_code == 1, unjoined.output
  assert "no scored review has a label there" in unjoined.output
  numbered = tmp_path / "numbered.parquet"
  pq.write_table(pa.table({"review_id": pa.array([7, 12], pa.int64()),
                           "label": ["pos", "neg"]}), numbered)
  assert _label_map(str(numbered), "review_id", "label", ("neg", "pos")) == {
      "7": 1, "12": 0}
