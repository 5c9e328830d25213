"""Reruns that score only what is new (`--since`), and the README's example
of them run as written: the union of the runs holds each review once."""
import glob
import json
import os
import pathlib
import re
import shlex

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from pipeline.run import run
from reviewscore.cli import main
from schemas import columns as c

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _reviews(imdb_dir, start, n):
  table = pq.read_table(imdb_dir / "test.parquet", columns=["review_id", "text"])
  return table.slice(start, n)


def _write(path, table, *, bump_s=0):
  pq.write_table(table, path)
  if bump_s:  # a later modification time, as a day's rewrite would have
    stat = os.stat(path)
    os.utime(path, (stat.st_atime, stat.st_mtime + bump_s))


def _score(*args):
  return run(list(args) + ["--precision=float32"], save_main_session=False,
             echo=lambda m: None)


def _union(folder):
  return pq.read_table(sorted(glob.glob(f"{folder}/*-?????-of-?????.parquet")))


def test_a_rerun_scores_new_and_changed_files_only(tiny_model_dir, imdb_dir,
                                                   tmp_path):
  archive = tmp_path / "archive"
  archive.mkdir()
  for day in range(3):
    _write(archive / f"day{day}.parquet", _reviews(imdb_dir, day * 10, 10))
  pattern = str(archive / "*.parquet")
  out = tmp_path / "scores"
  first = _score(f"--input={pattern}", f"--model={tiny_model_dir}",
                 f"--output={out}/run1")
  assert first.counts["read"] == 30

  # A new file arrives, and day1 is rewritten with other reviews.
  _write(archive / "day3.parquet", _reviews(imdb_dir, 30, 10))
  _write(archive / "day1.parquet", _reviews(imdb_dir, 100, 7), bump_s=60)
  second = _score(f"--input={pattern}", f"--model={tiny_model_dir}",
                  f"--output={out}/run2", f"--since={out}/run1")
  assert second.counts["read"] == 17  # day3's 10 and day1's 7, nothing else
  manifest = json.loads(pathlib.Path(second.manifest_path).read_text())
  assert manifest["extends"] == [f"{out}/run1"]
  assert manifest["increment"] == {
      "since": f"{out}/run1", "new_files": 1, "changed_files": 1,
      "unchanged_files": 2, "vanished_files": 0, "earlier_rows_replaced": 10}
  assert sorted(manifest["input_files"]) == sorted(
      str(p) for p in archive.glob("*.parquet"))

  union = _union(out)
  current = pa.concat_tables([pq.read_table(p) for p in sorted(archive.glob("*.parquet"))])
  assert union.num_rows == current.num_rows == 37
  assert sorted(union[c.REVIEW_ID].to_pylist()) == sorted(current["review_id"].to_pylist())
  # Unchanged files keep the first run's rows, scores included.
  earlier = pq.read_table(first.score_files).to_pandas().set_index(c.REVIEW_ID)
  now = union.to_pandas().set_index(c.REVIEW_ID)
  kept = [i for i in _reviews(imdb_dir, 0, 10)["review_id"].to_pylist()]
  assert np.array_equal(now.loc[kept, c.SCORE].to_numpy(),
                        earlier.loc[kept, c.SCORE].to_numpy())
  assert (now.loc[kept, c.SOURCE_FILE] == str(archive / "day0.parquet")).all()

  # Nothing new: nothing scored, and the union is unchanged.
  third = _score(f"--input={pattern}", f"--model={tiny_model_dir}",
                 f"--output={out}/run3", f"--since={out}/run2")
  assert third.counts["read"] == 0
  assert json.loads(pathlib.Path(third.manifest_path).read_text())[
      "extends"] == [f"{out}/run1", f"{out}/run2"]
  assert _union(out).num_rows == 37


def test_another_model_or_input_means_a_full_run_or_an_error(
    tiny_model_dir, imdb_dir, tmp_path):
  archive = tmp_path / "archive"
  archive.mkdir()
  _write(archive / "a.parquet", _reviews(imdb_dir, 0, 6))
  pattern = str(archive / "*.parquet")
  first = _score(f"--input={pattern}", f"--model={tiny_model_dir}",
                 f"--output={tmp_path}/s/run1")
  manifest_path = pathlib.Path(first.manifest_path)
  manifest = json.loads(manifest_path.read_text())
  manifest["model"]["fingerprint"] = "another model"
  manifest_path.write_text(json.dumps(manifest))
  again = _score(f"--input={pattern}", f"--model={tiny_model_dir}",
                 f"--output={tmp_path}/s/run2", f"--since={tmp_path}/s/run1")
  assert again.counts["read"] == 6
  assert json.loads(pathlib.Path(again.manifest_path).read_text())["extends"] == []

  result = CliRunner().invoke(main, [
      "score", "--input", str(archive / "a.parquet"), "--model",
      str(tiny_model_dir), "--output", f"{tmp_path}/s/run3", "--since",
      f"{tmp_path}/s/run2"])
  assert result.exit_code == 1 and "same input pattern" in result.output
  same = CliRunner().invoke(main, [
      "score", "--input", pattern, "--model", str(tiny_model_dir),
      "--output", f"{tmp_path}/s/run2", "--since", f"{tmp_path}/s/run2"])
  assert same.exit_code == 2 and "new --output prefix" in same.output


def _readme_example():
  section = README.read_text().split("### An archive that grows", 1)[1]
  section = section.split("\n## ", 1)[0].split("\n### ", 1)[0]
  block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
  lines = block.replace("\\\n", " ").splitlines()
  commands = [shlex.split(line) for line in lines
              if line.strip() and not line.startswith("#")]
  query = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
  return commands, query


def test_the_readmes_rerun_example_runs_as_written(tiny_model_dir, imdb_dir,
                                                   tmp_path, monkeypatch):
  commands, query = _readme_example()
  assert [cmd[:2] for cmd in commands] == [["reviewscore", "score"]] * 2
  monkeypatch.chdir(tmp_path)
  pathlib.Path("models").mkdir()
  os.symlink(tiny_model_dir, "models/stars")
  pathlib.Path("archive").mkdir()
  _write(pathlib.Path("archive/2026-11-24.parquet"), _reviews(imdb_dir, 0, 12))
  result = CliRunner().invoke(main, commands[0][1:])
  assert result.exit_code == 0, result.output
  _write(pathlib.Path("archive/2026-11-25.parquet"), _reviews(imdb_dir, 12, 5))
  result = CliRunner().invoke(main, commands[1][1:])
  assert result.exit_code == 0, result.output
  assert "1 new, 0 changed and 1 unchanged file(s)" in result.output
  reviews, distinct = duckdb.sql(query).fetchall()[0][:2]
  assert reviews == distinct == 17
