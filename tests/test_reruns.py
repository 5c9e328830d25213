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
import pytest
from click.testing import CliRunner

from pipeline.run import PipelineFailed, run
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


def _first_run(tmp_path, imdb_dir, model):
  """An archive of one file (a.parquet, 6 reviews) scored in full as run1:
  (archive folder, input pattern, scores folder)."""
  archive = tmp_path / "archive"
  archive.mkdir()
  _write(archive / "a.parquet", _reviews(imdb_dir, 0, 6))
  pattern = str(archive / "*.parquet")
  out = tmp_path / "scores"
  _score(f"--input={pattern}", f"--model={model}", f"--output={out}/run1")
  return archive, pattern, out


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


def test_files_that_leave_the_input_leave_the_union(tiny_model_dir, imdb_dir,
                                                    tmp_path):
  """Catches: a renamed file's reviews showing twice in the union (under
  both names), and a deleted file's rows staying in it."""
  archive = tmp_path / "archive"
  archive.mkdir()
  for name, start in (("a", 0), ("b", 8), ("c", 16)):
    _write(archive / f"{name}.parquet", _reviews(imdb_dir, start, 8))
  pattern = str(archive / "*.parquet")
  out = tmp_path / "scores"
  _score(f"--input={pattern}", f"--model={tiny_model_dir}", f"--output={out}/run1")
  (archive / "a.parquet").rename(archive / "a2.parquet")
  (archive / "c.parquet").unlink()
  rerun = _score(f"--input={pattern}", f"--model={tiny_model_dir}",
                 f"--output={out}/run2", f"--since={out}/run1")
  assert rerun.counts["read"] == 8  # a2, as a new file
  manifest = json.loads(pathlib.Path(rerun.manifest_path).read_text())
  assert manifest["increment"]["vanished_files"] == 2
  assert manifest["increment"]["earlier_rows_replaced"] == 16
  assert sorted(manifest["input_files"]) == [str(archive / "a2.parquet"),
                                             str(archive / "b.parquet")]
  union = _union(out)
  assert sorted(union[c.REVIEW_ID].to_pylist()) == sorted(
      _reviews(imdb_dir, 0, 16)["review_id"].to_pylist())
  assert set(union[c.SOURCE_FILE].to_pylist()) == {
      str(archive / "a2.parquet"), str(archive / "b.parquet")}


def test_a_rerun_that_cannot_extend_its_runs_is_refused_before_scoring(
    tiny_model_dir, imdb_dir, tmp_path):
  """Catches, each of which silently doubled or lost rows: an --output that
  is one of the runs extended (its shards were deleted as stale), --since
  naming a run a later rerun already extends, reading the input otherwise
  (other carried columns: the union's shards no longer one table), an
  earlier shard gone, and a damaged manifest (a traceback)."""
  archive, pattern, out = _first_run(tmp_path, imdb_dir, tiny_model_dir)
  _write(archive / "b.parquet", _reviews(imdb_dir, 6, 6))
  _score(f"--input={pattern}", f"--model={tiny_model_dir}",
         f"--output={out}/run2", f"--since={out}/run1")
  _write(archive / "c.parquet", _reviews(imdb_dir, 12, 6))
  before = sorted(p.name for p in out.iterdir())

  def rerun(*extra):
    return CliRunner().invoke(main, [
        "score", "--input", pattern, "--model", str(tiny_model_dir), *extra])

  into_chain = rerun("--output", f"{out}/run1", "--since", f"{out}/run2")
  assert into_chain.exit_code == 2, into_chain.output
  assert "one of the runs this one extends" in into_chain.output
  not_latest = rerun("--output", f"{out}/run3", "--since", f"{out}/run1")
  assert not_latest.exit_code == 1, not_latest.output
  assert f"{out}/run2 already extends it" in not_latest.output
  other_columns = rerun("--output", f"{out}/run3", "--since", f"{out}/run2",
                        "--carry-columns", "text")
  assert other_columns.exit_code == 1, other_columns.output
  assert "read its input otherwise (carried: [] then" in other_columns.output
  assert sorted(p.name for p in out.iterdir()) == before

  shard = json.loads((out / "run1-manifest.json").read_text())["scores"][0]
  os.rename(shard, shard + ".away")
  gone = rerun("--output", f"{out}/run3", "--since", f"{out}/run2")
  assert gone.exit_code == 1 and "are gone (first " in gone.output, gone.output
  os.rename(shard + ".away", shard)

  (out / "run2-manifest.json").write_text('{"input": ')
  damaged = rerun("--output", f"{out}/run3", "--since", f"{out}/run2")
  assert damaged.exit_code == 1, damaged.output
  assert "is not a readable manifest" in damaged.output
  # A ClickException (one line), not an escaped JSONDecodeError.
  assert isinstance(damaged.exception, SystemExit), damaged.exception
  assert damaged.output.strip().splitlines()[-1].startswith("Error: ")
  assert sorted(p.name for p in out.iterdir()) == before


def test_the_same_weights_served_otherwise_mean_a_full_run():
  """Catches: a rerun keeping scores and labels a model with the same
  weights gave under another decision threshold or tokenization."""
  from schemas.manifest import ModelUsed, Precision, RunManifest
  model = {"dir": "m", "name": "m", "fingerprint": "f1", "threshold": 0.5,
           "precision": {"requested": "auto"},
           "tokenization": {"seq_length": 256, "truncation": "head+tail"}}

  def differs(then: dict):
    earlier = RunManifest.from_dict({"run_id": "r1", "model": then,
                                     "input_files": {}})
    now = ModelUsed(**{**model, "precision": Precision("auto")})
    return now.differs_from(earlier.model)
  assert differs(dict(model)) is None
  # Manifests of older versions record neither: the fingerprint decides.
  assert differs({"fingerprint": "f1"}) is None
  assert "another model" in differs({**model, "fingerprint": "f0"})
  assert "decision threshold (0.9 then, 0.5 now)" in differs(
      {**model, "threshold": 0.9})
  assert "tokenization" in differs(
      {**model, "tokenization": {"seq_length": 128, "truncation": "head"}})


def test_a_rerun_cut_while_committing_never_shows_a_review_twice(
    tiny_model_dir, imdb_dir, tmp_path, monkeypatch):
  """A rerun's commit (pipeline/commit.py: the earlier rows of the files it
  rescores are dropped from each earlier shard, then its own shards are
  moved in, then its manifest is written) cut at each step, then run
  again as the same command. The earlier rows sit in two shards (run1's
  and run2's), so a cut can fall between them.

  Catches: the rerun's shards moved in before the earlier rows were
  removed (the changed files' reviews twice in the union), rows dropped
  that were not the changed files', a manifest written by a cut run, and
  a rerun that cannot complete what a cut one left."""
  from pipeline import commit
  archive = tmp_path / "archive"
  archive.mkdir()
  a_old, c_kept, b_old = (_reviews(imdb_dir, start, 6) for start in (0, 6, 12))
  a_new, b_new = _reviews(imdb_dir, 100, 6), _reviews(imdb_dir, 106, 6)
  _write(archive / "a.parquet", a_old)
  _write(archive / "c.parquet", c_kept)
  pattern = str(archive / "*.parquet")
  out = tmp_path / "scores"
  _score(f"--input={pattern}", f"--model={tiny_model_dir}",
         f"--output={out}/run1")
  _write(archive / "b.parquet", b_old)
  _score(f"--input={pattern}", f"--model={tiny_model_dir}",
         f"--output={out}/run2", f"--since={out}/run1")
  earlier_shards = sorted(glob.glob(f"{out}/*-?????-of-?????.parquet"))
  assert len(earlier_shards) == 2  # run1's (a, c) and run2's (b)
  # a and b are rewritten with other reviews; c stays.
  _write(archive / "a.parquet", a_new, bump_s=60)
  _write(archive / "b.parquet", b_new, bump_s=60)

  def ids(*tables):
    return sorted(i for t in tables for i in t["review_id"].to_pylist())

  def union_ids():
    union = _union(out)[c.REVIEW_ID].to_pylist()
    assert len(union) == len(set(union)), "a review twice in the union"
    return sorted(union)

  def rerun_cut(message):
    with pytest.raises(PipelineFailed, match=message):
      _score(f"--input={pattern}", f"--model={tiny_model_dir}",
             f"--output={out}/run3", f"--since={out}/run2")
    assert not (out / "run3-manifest.json").exists()
    assert not glob.glob(f"{out}/run3-?????-of-?????.parquet")

  # 1. Cut before any earlier row is dropped: the union is run2's.
  def before_dropping(shards, sources):
    raise OSError("cut before dropping")
  monkeypatch.setattr(commit, "drop_rows_of", before_dropping)
  rerun_cut("cut before dropping")
  assert union_ids() == ids(a_old, c_kept, b_old)
  monkeypatch.undo()

  # 2. Cut after the first earlier shard lost its rows, before the second:
  # one of the changed files' old reviews are gone, the other's still there,
  # and none of their new ones.
  rewritten = []
  real_write = commit.write_atomically

  def after_one_shard(path, data):
    if path.endswith(".parquet"):
      if rewritten:
        raise OSError("cut between shards")
      real_write(path, data)
      rewritten.append(path)
      raise OSError("cut between shards")
    real_write(path, data)
  monkeypatch.setattr(commit, "write_atomically", after_one_shard)
  rerun_cut("cut between shards")
  assert len(rewritten) == 1 and rewritten[0] in earlier_shards
  assert union_ids() in (ids(c_kept, b_old), ids(a_old, c_kept))
  monkeypatch.undo()

  # 3. Cut after every earlier row of a and b was dropped, before the
  # rerun's shards are moved in: the union lacks them, never doubles them.
  dropped = []
  real_drop = commit.drop_rows_of

  def after_dropping(shards, sources):
    dropped.append(real_drop(shards, sources))
    raise OSError("cut after dropping")
  monkeypatch.setattr(commit, "drop_rows_of", after_dropping)
  rerun_cut("cut after dropping")
  assert dropped == [6]  # the shard that step 2 had not reached yet
  assert union_ids() == ids(c_kept)
  monkeypatch.undo()

  # The same command completes the union: each current review once.
  again = _score(f"--input={pattern}", f"--model={tiny_model_dir}",
                 f"--output={out}/run3", f"--since={out}/run2")
  assert again.counts["read"] == 12  # a and b rescored, c kept
  assert union_ids() == ids(a_new, c_kept, b_new)
