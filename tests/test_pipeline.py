"""The scoring pipeline on a tiny real model and real IMDB reviews (in-process).

Runner parity (multi-processing, PortableRunner) is in test_pipeline_runners.
"""
import glob
import gzip
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import tensorflow as tf
import tensorflow_text  # noqa: F401

from pipeline import model_handler
from pipeline.plan import InputError
from pipeline.lines import read_lines
from pipeline.run import PipelineFailed, run
from reviewscore.cli import main
from schemas import columns as c


def imdb_rows(imdb_dir, n, *, offset=0):
  table = pq.read_table(imdb_dir / "test.parquet")
  # Both classes: the test split is sorted neg then pos.
  half = n // 2
  return pa.concat_tables([table.slice(offset, half),
                           table.slice(12500 + offset, n - half)])


def score(tmp_path, *args, output="scores/run"):
  """Scores in float32 unless told otherwise: results are compared with
  `serving_default` (float32), and must not depend on the host's CPU."""
  out = str(tmp_path / output)
  if not any(a.startswith("--precision") for a in args):
    args += ("--precision=float32",)
  return run(list(args) + [f"--output={out}"], save_main_session=False,
             echo=lambda m: None)


def read_scores(result):
  return pq.read_table(result.score_files)


def read_errors(result):
  return pq.read_table(result.error_files)


@pytest.fixture(scope="module")
def serving(tiny_model_dir):
  model = tf.saved_model.load(str(tiny_model_dir / "saved_model"))

  def probabilities(texts):
    out = model.signatures["serving_default"](text=tf.constant(list(texts)))
    return out["probability"].numpy()
  return probabilities


def test_parquet_with_carried_columns_matches_serving_default(
    tiny_model_dir, imdb_dir, tmp_path, serving):
  rows = imdb_rows(imdb_dir, 40)
  inputs = tmp_path / "in"
  inputs.mkdir()
  pq.write_table(rows.slice(0, 30), inputs / "a.parquet", row_group_size=8)
  # A second file without the id column: an error, or FILE:ROW ids when
  # asked for.
  pq.write_table(rows.slice(30).drop_columns(["review_id"]),
                 inputs / "b.parquet")
  with pytest.raises(InputError, match="--id-column"):
    score(tmp_path, f"--input={inputs}/*.parquet", f"--model={tiny_model_dir}")
  result = score(tmp_path, f"--input={inputs}/*.parquet",
                 f"--model={tiny_model_dir}", "--num_shards=3",
                 "--carry_columns=label:true_label,rating", "--positional_ids")
  assert result.counts == {"read": 40, "scored": 40, "dead_lettered": 0,
                           "dead_lettered_by_reason": {}}
  assert result.metrics["read"] == 40 and result.metrics["scored"] == 40
  assert [pathlib.Path(f).name for f in result.score_files] == [
      f"run-0000{i}-of-00003.parquet" for i in range(3)]
  table = read_scores(result)
  card = json.loads((tiny_model_dir / "model_card.json").read_text())
  assert table.schema.names == list(c.SCORED_FIELDS) + ["true_label", "rating"]
  assert table.schema.field(c.SCORE).type == pa.float32()
  assert table.schema.field(c.LABEL_ID).type == pa.int8()
  assert table.schema.field("rating").type == pa.int8()
  metadata = pq.read_schema(result.score_files[0]).metadata
  assert metadata[c.METADATA_MODEL_NAME] == card["model_name"].encode()
  assert metadata[c.METADATA_MODEL_FINGERPRINT] == \
      card["model_fingerprint"].encode()
  assert float(metadata[c.METADATA_THRESHOLD]) == card["threshold"]

  got = {r[c.REVIEW_ID]: r for r in table.to_pylist()}
  expected_ids = rows["review_id"].to_pylist()[:30] + [
      f"b.parquet:{i}" for i in range(10)]
  assert sorted(got) == sorted(expected_ids)
  expected = serving(rows["text"].to_pylist())
  scores = np.array([got[i][c.SCORE] for i in expected_ids])
  np.testing.assert_allclose(scores, expected, atol=1e-5)
  for review_id, source in zip(expected_ids, rows.to_pylist()):
    row = got[review_id]
    assert row["true_label"] == source["label"]
    assert row["rating"] == source["rating"]
    assert row[c.LABEL_ID] == int(row[c.SCORE] >= card["threshold"])
    assert row[c.LABEL_NAME] == card["class_names"][row[c.LABEL_ID]]
    assert row[c.MODEL_FINGERPRINT] == card["model_fingerprint"]
  manifest = json.loads(pathlib.Path(result.manifest_path).read_text())
  assert manifest["counts"]["read"] == 40
  assert not list(tmp_path.glob("scores/.run.staging-*"))


def test_text_lines_with_bad_records_reconcile(tiny_model_dir, imdb_dir,
                                               tmp_path, serving):
  texts = [t.replace("\n", " ") for t in
           imdb_rows(imdb_dir, 12)["text"].to_pylist()]
  good = b"\n".join(t.encode() for t in texts[:6])
  bad = [b"", b"   \t ", b"caf\xe9 \xff\xfe broken utf-8", b"a\x00b\x00c",
         b"x" * (5 * 1024 * 1024), bytes(range(128, 256))]
  body = good + b"\n" + b"\n".join(bad) + b"\n" + \
      b"\r\n".join(t.encode() for t in texts[6:]) + b"\n"
  inputs = tmp_path / "text"
  inputs.mkdir()
  (inputs / "reviews.txt").write_bytes(body)
  with gzip.open(inputs / "more.txt.gz", "wb") as f:  # streamed, decompressed
    f.write(texts[0].encode() + b"\n")
  result = score(tmp_path, f"--input={inputs}/*", "--format=text",
                 f"--model={tiny_model_dir}", "--max_review_bytes=100000",
                 "--num_shards=1")
  counts = result.counts
  assert counts["read"] == 12 + len(bad) + 1
  assert counts["read"] == counts["scored"] + counts["dead_lettered"]
  assert counts["scored"] == 13
  assert counts["dead_lettered_by_reason"] == {
      c.REASON_EMPTY_TEXT: 2, c.REASON_UNDECODABLE: 2, c.REASON_BINARY: 1,
      c.REASON_TOO_LONG: 1}
  errors = {r[c.REVIEW_ID]: r for r in read_errors(result).to_pylist()}
  assert errors["reviews.txt:7"][c.ERROR_REASON] == c.REASON_EMPTY_TEXT
  assert errors["reviews.txt:9"][c.ERROR_REASON] == c.REASON_UNDECODABLE
  assert errors["reviews.txt:11"][c.ERROR_REASON] == c.REASON_TOO_LONG
  assert errors["reviews.txt:11"][c.SOURCE_FILE] == str(inputs / "reviews.txt")
  table = read_scores(result)
  got = dict(zip(table[c.REVIEW_ID].to_pylist(), table[c.SCORE].to_pylist()))
  ids = [f"reviews.txt:{i}" for i in range(1, 7)] + [
      f"reviews.txt:{i}" for i in range(13, 19)] + ["more.txt.gz:1"]
  assert sorted(got) == sorted(ids)
  np.testing.assert_allclose([got[i] for i in ids],
                             serving(texts + texts[:1]), atol=1e-5)


def test_files_tree_and_parquet_bad_values(tiny_model_dir, imdb_dir, tmp_path):
  rows = imdb_rows(imdb_dir, 8).to_pylist()
  root = tmp_path / "aclImdb"
  for row in rows:
    path = root / row["review_id"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".txt").write_text(row["text"])
  (root / "test" / "neg" / "empty.txt").write_text("")
  (root / "test" / "neg" / "garbage.txt").write_bytes(
      np.random.default_rng(0).bytes(300))
  (root / "test" / "pos" / "huge.txt").write_text("great " * 50_000)
  (root / ".hidden").mkdir()
  (root / ".hidden" / "skipped.txt").write_text("not an input")
  result = score(tmp_path, f"--input={root}", f"--model={tiny_model_dir}",
                 "--max_review_bytes=200000", output="scores/tree")
  assert result.counts["read"] == 11 and result.counts["scored"] == 8
  ids = set(read_scores(result)[c.REVIEW_ID].to_pylist())
  assert ids == {r["review_id"] + ".txt" for r in rows}
  errors = {r[c.REVIEW_ID]: r[c.ERROR_REASON]
            for r in read_errors(result).to_pylist()}
  assert errors == {"test/neg/empty.txt": c.REASON_EMPTY_TEXT,
                    "test/neg/garbage.txt": c.REASON_UNDECODABLE,
                    "test/pos/huge.txt": c.REASON_TOO_LONG}

  # Parquet: nulls, blanks, numbers, lists; duplicate ids are all scored.
  parquet = tmp_path / "pq"
  parquet.mkdir()
  pq.write_table(pa.table({"review_id": ["d", "d", "n", "w", "ok"],
                           "text": ["fine movie", "great movie", None, "  ",
                                    "bad plot"]}), parquet / "strings.parquet")
  pq.write_table(pa.table({"review_id": ["i1", "i2"], "text": [1, 2]}),
                 parquet / "numbers.parquet")
  pq.write_table(pa.table({"review_id": ["l1"], "text": [["a", "list"]]}),
                 parquet / "lists.parquet")
  result = score(tmp_path, f"--input={parquet}/*.parquet",
                 f"--model={tiny_model_dir}", output="scores/pq")
  assert result.counts["read"] == 8 and result.counts["scored"] == 3
  assert result.counts["dead_lettered_by_reason"] == {
      c.REASON_EMPTY_TEXT: 1, c.REASON_NOT_A_STRING: 3, c.REASON_NULL_TEXT: 1}
  assert sorted(read_scores(result)[c.REVIEW_ID].to_pylist()) == [
      "d", "d", "ok"]


def _invoke(*args):
  return CliRunner().invoke(main, ["score", *map(str, args)])


def test_unreadable_inputs_and_models_fail_fast(tiny_model_dir, imdb_dir,
                                                tmp_path):
  good = tmp_path / "good.parquet"
  pq.write_table(imdb_rows(imdb_dir, 4), good)
  truncated = tmp_path / "bad" / "truncated.parquet"
  truncated.parent.mkdir()
  shutil.copy(good, truncated.parent / "ok.parquet")
  truncated.write_bytes(good.read_bytes()[:-100])
  unreadable = tmp_path / "unreadable"
  unreadable.mkdir()
  shutil.copy(good, unreadable / "a.parquet")
  (unreadable / "b.parquet").symlink_to(tmp_path / "gone.parquet")
  no_text = tmp_path / "no_text.parquet"
  pq.write_table(pa.table({"review_id": ["a"], "body": ["x"]}), no_text)
  out = tmp_path / "out" / "s"
  model = tiny_model_dir
  cases = [
      (["--input", tmp_path / "missing.parquet", "--model", model],
       "no such file or directory"),
      (["--input", tmp_path / "nothing-*.parquet", "--model", model],
       "no input files match"),
      (["--input", truncated.parent / "*.parquet", "--model", model],
       "truncated.parquet: not a readable Parquet file"),
      (["--input", no_text, "--model", model], "no text column 'text'"),
      (["--input", unreadable / "*.parquet", "--model", model],
       "b.parquet: cannot read the file (a broken symbolic link)"),
      (["--input", good, "--model", tmp_path / "no-model"],
       "no such model directory"),
  ]
  broken = {}
  for name, damage in (("no_card", "card"), ("corrupt", "pb"),
                       ("future", "version"), ("no_saved_model", "sm"),
                       ("replaced", "weights")):
    copy = tmp_path / name
    shutil.copytree(tiny_model_dir, copy)
    if damage == "card":
      (copy / "model_card.json").unlink()
    elif damage == "pb":
      pb = copy / "saved_model" / "saved_model.pb"
      pb.write_bytes(pb.read_bytes()[:1000])
    elif damage == "weights":  # other weights put in place after training
      index = copy / "saved_model" / "variables" / "variables.index"
      data = bytearray(index.read_bytes())
      data[-1] ^= 0xFF
      index.write_bytes(bytes(data))
    elif damage == "version":
      card = json.loads((copy / "model_card.json").read_text())
      card["format_version"] = 99
      (copy / "model_card.json").write_text(json.dumps(card))
    else:
      shutil.rmtree(copy / "saved_model")
    broken[damage] = copy
  cases += [
      (["--input", good, "--model", broken["card"]], "no model_card.json"),
      (["--input", good, "--model", broken["pb"]], "corrupt SavedModel"),
      (["--input", good, "--model", broken["version"]],
       "format_version 99 is not supported"),
      (["--input", good, "--model", broken["sm"]], "no SavedModel"),
      (["--input", good, "--model", broken["weights"]],
       "changed since training"),
  ]
  for args, message in cases:
    result = _invoke(*args, "--output", out)
    assert result.exit_code == 1, (args, result.output)
    assert message in result.output, (args, result.output)
    assert isinstance(result.exception, SystemExit)
    assert len(result.output.strip().splitlines()) == 1, result.output
  assert not out.parent.exists()  # nothing written, not even staging

  # Each with the words of its one line (docs/reliability.md).
  usage = [(["--format", "xml"], "Invalid value for '--format': 'xml'"),
           (["--num-shards", "-1"], "Invalid value for '--num-shards'"),
           (["--max-batch-size", "0"], "Invalid value for '--max-batch-size'"),
           (["--min-batch-size", "9", "--max-batch-size", "4"],
            "--min_batch_size is larger than --max_batch_size"),
           (["--num-shard", "3"],
            "no such option: --num-shard (neither reviewscore's nor Beam's)"),
           (["--max-batch-duration-secs", "-1"],
            "Invalid value for '--max-batch-duration-secs'"),
           (["--bucket-boundaries", "64,32"],
            "--bucket_boundaries: expected increasing positive integers"),
           (["--precision", "int8"],
            "precision 'int8' is not offered by this model"),
           # Bucket options without bucketing would be silently ignored.
           (["--bucket-boundaries", "32,64"],
            "--bucket_boundaries applies with --length_bucketing only"),
           (["--max-batch-duration-secs", "5"],
            "--max_batch_duration_secs applies with --length_bucketing only"),
           # Beam's spellings and Beam's own options, bad values: one line,
           # not argparse's hundred-line usage of every Beam option.
           (["--num_shards=-1"], "--num_shards must be at least 0"),
           (["--direct_num_workers=abc"],
            "argument --direct_num_workers: invalid int value: 'abc'"),
           (["--direct_running_mode=sideways"],
            "argument --direct_running_mode: invalid choice: 'sideways'"),
           (["--runner=apache_beam.runners.DirectRuner"],
            "--runner: module 'apache_beam.runners' has no attribute "
            "'DirectRuner'"),
           (["--runner=no.such.Runner"], "--runner: No module named 'no'"),
           (["--direct_num_workers=-3"],
            "--direct_num_workers must be at least 0"),
           (["--runner=BundleBasedDirectRunner", "--length-bucketing"],
            "--length-bucketing cannot run on BundleBasedDirectRunner"),
           (["--id-column=text"],
            "--text-column and --id-column both name 'text'"),
           # An option given in both spellings: which one would win?
           (["--max-batch-size", "8", "--max_batch_size=64"],
            "--max-batch-size is given twice (also as --max_batch_size)"),
           # An unquoted glob's second file: only the first would be read.
           # The line says to quote the pattern.
           ([str(good) + ".second"],
            f"unexpected argument '{good}.second': options take one value "
            "each (quote a pattern, --input 'parts/*.parquet', or the shell "
            "expands it into several)"),
           # Any other word that is no option's value: the same line.
           (["stray"], "unexpected argument 'stray': options take one value "
            "each (quote a pattern")]
  for extra, message in usage:
    result = _invoke("--input", good, "--model", model, "--output", out,
                     *extra)
    assert result.exit_code == 2, (extra, result.output)
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if "rror" in line]
    assert len(errors) == 1 and len(result.output.splitlines()) < 8, (
        extra, result.output)
    assert errors[0].startswith("Error: ") and message in errors[0], (
        extra, message, result.output)
  module = subprocess.run(
      [sys.executable, "-m", "pipeline.run", f"--input={good}",
       f"--model={model}", f"--output={out}", "--num_shards=-1"],
      capture_output=True, text=True, timeout=120)
  assert module.returncode == 2, module.stderr
  assert module.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "Traceback" not in module.stderr
  assert not out.parent.exists()


def test_beams_spellings_of_our_options_take_effect_on_the_command_line(
    tiny_model_dir, imdb_dir, tmp_path):
  """Catches: click's defaults for the dashed options overriding the same
  options given in Beam's spelling, silently (3 shards asked, 1 written;
  a carried column missing)."""
  data = tmp_path / "in.parquet"
  pq.write_table(imdb_rows(imdb_dir, 4), data)
  result = _invoke("--input", data, "--model", tiny_model_dir, "--output",
                   tmp_path / "s", "--num_shards=3", "--precision", "float32",
                   "--carry_columns", "label:true_label")
  assert result.exit_code == 0, result.output
  manifest = json.loads((tmp_path / "s-manifest.json").read_text())
  assert len(manifest["scores"]) == 3
  table = pq.read_table(manifest["scores"])
  assert sorted(table["true_label"].to_pylist()) == [0, 0, 1, 1]


def test_length_buckets_too_small_to_fill_a_batch_are_scored(
    tiny_model_dir, imdb_dir, serving, tmp_path):
  # Every bucket stays below its batch of 32, so each batch is flushed only
  # at the end of the window. DirectRunner's legacy engine (which a
  # processing-time timer selects) dropped exactly these batches.
  rows = imdb_rows(imdb_dir, 6)
  data = tmp_path / "in.parquet"
  pq.write_table(rows, data)
  result = score(tmp_path, f"--input={data}", f"--model={tiny_model_dir}",
                 "--runner=DirectRunner", "--length-bucketing")
  assert result.counts["scored"] == 6 and result.counts["dead_lettered"] == 0
  table = read_scores(result)
  by_id = dict(zip(table[c.REVIEW_ID].to_pylist(), table[c.SCORE].to_pylist()))
  expected = serving(rows["text"].to_pylist())
  np.testing.assert_allclose([by_id[i] for i in rows["review_id"].to_pylist()],
                             expected, atol=1e-5)
  batching = json.loads(pathlib.Path(result.manifest_path).read_text())[
      "batching"]
  assert batching["length_bucketing"] is True
  assert batching["sort_wave_size"] == 0  # the buckets do the sorting
  assert batching["bucket_boundaries"] == [16, 32, 48, 64]
  assert batching["max_batch_duration_secs"] == 0  # DirectRunner waits


def test_failed_run_leaves_nothing_complete_and_rerun_completes(
    tiny_model_dir, imdb_dir, tmp_path):
  data = tmp_path / "in.parquet"
  pq.write_table(imdb_rows(imdb_dir, 20), data)
  # Passes the launcher's checks, then fails on the worker loading it.
  damaged = tmp_path / "damaged"
  shutil.copytree(tiny_model_dir, damaged)
  for part in (damaged / "saved_model" / "variables").glob("variables.data*"):
    part.write_bytes(b"\0" * 64)
  out = tmp_path / "scores" / "run"
  with pytest.raises(PipelineFailed, match="nothing was committed"):
    score(tmp_path, f"--input={data}", f"--model={damaged}", "--num_shards=2")
  assert not glob.glob(f"{out}-*-of-*.parquet")
  assert not pathlib.Path(f"{out}-manifest.json").exists()

  first = score(tmp_path, f"--input={data}", f"--model={tiny_model_dir}",
                "--num_shards=2")
  assert len(glob.glob(f"{out}-0*.parquet")) == 2
  before = read_scores(first).sort_by(c.REVIEW_ID)
  again = score(tmp_path, f"--input={data}", f"--model={tiny_model_dir}",
                "--num_shards=1")
  # The rerun replaced the two shards of the first run with its one.
  assert sorted(glob.glob(f"{out}-0*.parquet")) == again.score_files
  after = read_scores(again).sort_by(c.REVIEW_ID)
  for column in (c.REVIEW_ID, c.LABEL_NAME, c.LABEL_ID, c.MODEL_FINGERPRINT):
    assert after[column].to_pylist() == before[column].to_pylist()
  # Batches are cut differently from run to run: float rounding only.
  np.testing.assert_allclose(after[c.SCORE].to_numpy(),
                             before[c.SCORE].to_numpy(), atol=1e-5)


def test_transient_inference_failure_is_retried_persistent_is_dead_lettered(
    tiny_model_dir, imdb_dir, tmp_path, monkeypatch):
  data = tmp_path / "in.parquet"
  pq.write_table(imdb_rows(imdb_dir, 16), data)
  real = model_handler.TokenIdsModelHandler._classify
  calls = {"n": 0}

  def flaky(self, model, ids, mask):
    calls["n"] += 1
    if calls["n"] == 1:
      raise tf.errors.UnavailableError(None, None, "accelerator went away")
    return real(self, model, ids, mask)
  monkeypatch.setattr(model_handler.TokenIdsModelHandler, "_classify", flaky)
  monkeypatch.setattr(model_handler, "BACKOFF_SECS", 0.01)
  result = score(tmp_path, f"--input={data}", f"--model={tiny_model_dir}",
                 "--max_batch_size=4", "--min_batch_size=4", output="s/flaky")
  assert calls["n"] >= 5  # 4 batches + the retried one
  ids = read_scores(result)[c.REVIEW_ID].to_pylist()
  assert len(ids) == len(set(ids)) == 16 and result.counts["dead_lettered"] == 0

  def broken(self, model, ids, mask):
    raise RuntimeError("persistent fault")
  monkeypatch.setattr(model_handler.TokenIdsModelHandler, "_classify", broken)
  result = score(tmp_path, f"--input={data}", f"--model={tiny_model_dir}",
                 "--inference_attempts=2", output="s/broken")
  assert result.counts["scored"] == 0
  assert result.counts["dead_lettered_by_reason"] == {
      c.REASON_INFERENCE_FAILED: 16}
  detail = read_errors(result)[c.ERROR_DETAIL].to_pylist()
  assert all("persistent fault" in d for d in detail)


def test_read_lines_streams_long_lines():
  import io
  data = b"short\n" + b"y" * 300_000 + b"\nlast\r\nno newline at end"
  lines = list(read_lines(io.BytesIO(data), 1000))
  assert lines == [(1, b"short", 5), (2, None, 300_000), (3, b"last", 5),
                   (4, b"no newline at end", 17)]
