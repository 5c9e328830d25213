"""Inputs users have: CSV and JSON Lines beside Parquet, as a file, a folder
of parts (with Spark's `_SUCCESS` marker) or a glob, for `score` and `train`.
Read by pyarrow's own readers, on real IMDB reviews."""
import gzip
import io
import json
import pathlib

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from pipeline.plan import InputError, plan_input
from pipeline.run import run
from train.data import reviews as data_lib


@pytest.fixture(scope="module")
def reviews(imdb_dir):
  table = pq.read_table(imdb_dir / "test.parquet",
                        columns=["review_id", "text", "label", "rating"])
  return pa.concat_tables([table.slice(0, 12), table.slice(12500, 12)])


def _score(tmp_path, pattern, model, *extra):
  return run([f"--input={pattern}", f"--model={model}",
              f"--output={tmp_path / 'out' / 's'}", "--precision=float32",
              *extra], save_main_session=False, echo=lambda m: None)


def test_csv_and_json_lines_parts_are_scored_with_carried_columns(
    reviews, tiny_model_dir, tmp_path):
  """Catches: CSV quoting (commas, newlines in reviews) parsed by hand, a
  `_SUCCESS` marker read as input, gzip parts not decompressed, and ids or
  carried columns lost on the way."""
  parts = tmp_path / "csv"
  parts.mkdir()
  pcsv.write_csv(reviews.slice(0, 10), parts / "part-0.csv")
  with gzip.open(parts / "part-1.csv.gz", "wb") as f:
    pcsv.write_csv(reviews.slice(10), f)
  (parts / "_SUCCESS").write_text("")
  plan = plan_input(str(parts))
  assert plan.format == "csv" and len(plan.files) == 2
  result = _score(tmp_path / "a", parts, tiny_model_dir,
                  "--carry_columns=rating")
  assert result.counts["read"] == result.counts["scored"] == 24
  scored = pq.read_table(result.score_files)
  expected = dict(zip(reviews["review_id"].to_pylist(),
                      reviews["rating"].to_pylist()))
  assert dict(zip(scored["review_id"].to_pylist(),
                  scored["rating"].to_pylist())) == expected

  lines = tmp_path / "reviews.jsonl"
  rows = reviews.to_pylist()
  rows[0]["text"] = None  # dead-lettered, the rest scored
  lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
  result = _score(tmp_path / "b", lines, tiny_model_dir)
  assert result.counts["scored"] == 23
  assert result.counts["dead_lettered_by_reason"] == {"null_text": 1}


def test_a_file_named_on_its_own_is_read_whatever_its_name(reviews, tmp_path):
  """Catches: the filter for markers (`_SUCCESS`) and dot-files refusing a
  file the user named ("no input files match"), while in a folder or a
  glob such names are still skipped."""
  pq.write_table(reviews, tmp_path / "_reviews.parquet")
  pq.write_table(reviews, tmp_path / "reviews.parquet")
  plan = plan_input(str(tmp_path / "_reviews.parquet"))
  assert [p for p, _ in plan.files] == [str(tmp_path / "_reviews.parquet")]
  for pattern in (str(tmp_path), str(tmp_path / "*.parquet")):
    assert [p for p, _ in plan_input(pattern).files] == [
        str(tmp_path / "reviews.parquet")]


def test_rows_pyarrow_cannot_parse_are_dead_lettered_not_fatal(
    reviews, tiny_model_dir, tmp_path):
  """Each of these failed a whole CSV run (or a Parquet batch) before: a
  row with too many fields (and one with a byte that is not UTF-8 too), a
  text cell that is not UTF-8, a row longer
  than pyarrow's 1 MiB block after the first block; and texts or ids that
  read "NA" or "null" were turned into nulls. Now every record is scored
  or dead-lettered with its reason, and the counts add up."""
  header = b"review_id,text\n"
  good = [f"{i},{t}".encode() for i, t in zip(
      reviews["review_id"].to_pylist()[:4],
      ['"' + t.replace('"', '""') + '"' for t in reviews["text"].to_pylist()[:4]])]
  rows = [good[0], b"na-text,NA", b"null,a fine film", good[1],
          b"too-many,fields,here", b"latin1,caf\xe9 cr\xe8me", good[2],
          b"both,caf\xe9,too many", b"long," + b"x" * (1_500_000), good[3]]
  (tmp_path / "odd.csv").write_bytes(header + b"\n".join(rows) + b"\n")
  result = _score(tmp_path / "csv", tmp_path / "odd.csv", tiny_model_dir)
  assert result.counts["read"] == 10 and result.counts["scored"] == 6, result.counts
  assert result.counts["dead_lettered_by_reason"] == {
      "malformed_row": 2, "undecodable_bytes": 1, "too_long": 1}
  scored = set(pq.read_table(result.score_files)["review_id"].to_pylist())
  assert {"na-text", "null"} <= scored
  errors = pq.read_table(result.error_files).to_pylist()
  by_reason = {e["reason"]: e for e in errors}
  # A row with both the wrong field count and a byte that is not UTF-8
  # failed the file (pyarrow decodes a bad row strictly); its preview keeps
  # the file's bytes, the bad one replaced.
  malformed = {e["review_id"]: (e["detail"], e["text_preview"])
               for e in errors if e["reason"] == "malformed_row"}
  assert malformed == {
      "odd.csv:malformed-1": ("3 fields where the header has 2",
                              "too-many,fields,here"),
      "odd.csv:malformed-2": ("3 fields where the header has 2",
                              "both,caf\ufffd,too many")}
  assert by_reason["undecodable_bytes"]["review_id"] == "latin1"
  assert by_reason["too_long"]["review_id"] == "long"

  # "NA" in a numeric column carried along is a null, as pyarrow reads it.
  (tmp_path / "rated.csv").write_text(
      "review_id,text,rating\na,NA,7\nb,a fine film,NA\nc,null,\n")
  result = _score(tmp_path / "rated", tmp_path / "rated.csv", tiny_model_dir,
                  "--carry_columns=rating")
  assert result.counts["scored"] == 3, result.counts
  rated = pq.read_table(result.score_files)
  assert dict(zip(rated["review_id"].to_pylist(),
                  rated["rating"].to_pylist())) == {"a": 7, "b": None, "c": None}

  texts = pa.array([b"caf\xe9", b"a fine film"], pa.binary()).view(pa.string())
  pq.write_table(pa.table({"review_id": ["bad", "ok"], "text": texts}),
                 tmp_path / "odd.parquet")
  result = _score(tmp_path / "pq", tmp_path / "odd.parquet", tiny_model_dir)
  assert result.counts["scored"] == 1
  assert result.counts["dead_lettered_by_reason"] == {"undecodable_bytes": 1}


def test_an_id_or_carried_cell_that_is_not_utf8_is_its_rows_problem(
    tiny_model_dir, tmp_path):
  """An id, or a carried string cell, that is not UTF-8 failed its whole
  CSV file (pyarrow's string conversion) or Parquet batch; now only its
  row is dead-lettered, with the column named, and the other rows keep
  their ids and carried values."""
  parts = tmp_path / "parts"
  parts.mkdir()
  (parts / "part-0.csv").write_bytes(
      b"review_id,text,source\na,a fine film,web\n")
  (parts / "part-1.csv").write_bytes(
      b"review_id,text,source\nb\xff,a fine film,web\n"
      b"c,a fine film,caf\xe9\nd,a fine film,mail\n")
  result = _score(tmp_path / "csv", parts, tiny_model_dir,
                  "--carry_columns=source")
  assert result.counts["read"] == 4 and result.counts["scored"] == 2, \
      result.counts
  errors = {e["review_id"]: (e["reason"], e["detail"])
            for e in pq.read_table(result.error_files).to_pylist()}
  assert errors == {
      "part-1.csv:0": ("undecodable_bytes",
                       "column 'review_id' is not UTF-8: b'b\\xff'"),
      "c": ("undecodable_bytes", "column 'source' is not UTF-8: b'caf\\xe9'")}
  scored = pq.read_table(result.score_files)
  assert dict(zip(scored["review_id"].to_pylist(),
                  scored["source"].to_pylist())) == {"a": "web", "d": "mail"}

  as_string = lambda values: pa.array(values, pa.binary()).view(pa.string())
  pq.write_table(pa.table({
      "review_id": as_string([b"ok", b"bad\xff", b"fine"]),
      "text": ["a fine film"] * 3,
      "source": as_string([b"web", b"web", b"caf\xe9"])}),
      tmp_path / "odd.parquet")
  result = _score(tmp_path / "pq", tmp_path / "odd.parquet", tiny_model_dir,
                  "--carry_columns=source")
  assert result.counts["scored"] == 1, result.counts
  assert result.counts["dead_lettered_by_reason"] == {"undecodable_bytes": 2}
  assert pq.read_table(result.score_files)["source"].to_pylist() == ["web"]


def test_json_lines_are_read_a_line_at_a_time(reviews, tiny_model_dir,
                                              tmp_path):
  """pyarrow's reader failed the whole file on each of these: a line that
  is not JSON, a JSON array, a text that is a number, an id that turns
  from number to string, a carried value of another type than the first
  lines had; now each is one record, scored or dead-lettered with its
  reason, and carried values of mixed types keep their JSON text. Also: a
  BOM before the first line (pyarrow took it), and an escaped lone
  surrogate (no UTF-8 form: it would fail the Parquet write). An empty id
  is FILE:ROW, as in CSV."""
  rows = reviews.slice(0, 3).to_pylist()
  lines = [
      {"review_id": 1, "text": rows[0]["text"], "rating": 7},
      {"review_id": 2, "text": 42, "rating": 3},
      "not json at all {",
      [1, 2, 3],
      {"review_id": "three", "text": rows[1]["text"], "rating": 9},
      {"review_id": 4, "text": rows[2]["text"], "rating": "ten"},
      {"text": "no id here, still a review", "rating": None},
      {"review_id": 6, "text": "a carried value that does not fit",
       "rating": 2.5},
  ]
  body = "\ufeff" + "\n".join(line if isinstance(line, str) else json.dumps(line)
                              for line in lines) + "\n\n"
  body += '{"review_id": "lone", "text": "a lone \\ud800 surrogate"}\n'
  body += '{"review_id": "", "text": "an empty id is no id"}\n'
  with gzip.open(tmp_path / "odd.jsonl.gz", "wt", encoding="utf-8") as f:
    f.write(body)
  result = _score(tmp_path / "j", tmp_path / "odd.jsonl.gz", tiny_model_dir,
                  "--carry_columns=rating")
  assert result.counts["read"] == 10, result.counts
  assert result.counts["scored"] == 6
  assert result.counts["dead_lettered_by_reason"] == {
      "not_a_string": 1, "malformed_row": 2, "undecodable_bytes": 1}
  scored = pq.read_table(result.score_files)
  # Ratings of mixed types in the first lines: carried as their JSON text.
  assert scored.schema.field("rating").type == pa.string()
  assert dict(zip(scored["review_id"].to_pylist(),
                  scored["rating"].to_pylist())) == {
      "1": "7", "three": "9", "4": "ten", "odd.jsonl.gz:6": None, "6": "2.5",
      "odd.jsonl.gz:9": None}
  errors = {e["review_id"]: e for e in pq.read_table(result.error_files).to_pylist()}
  assert errors["2"]["reason"] == "not_a_string"
  assert errors["odd.jsonl.gz:2"]["detail"].startswith("line 3: not JSON")
  assert errors["odd.jsonl.gz:3"]["detail"] == "line 4: a JSON list, not an object"


def test_a_json_value_that_does_not_fit_its_planned_column_is_refused():
  """Beyond the lines planning samples, a carried value of another type
  than the column's is the record's problem (ReadJsonLines dead-letters
  it), never a silently changed value."""
  from pipeline.json_lines import carried_value
  assert carried_value(7, pa.int64()) == 7
  assert carried_value(7, pa.string()) == "7"
  assert carried_value({"a": [1]}, pa.string()) == '{"a": [1]}'
  assert carried_value(None, pa.int64()) is None
  # Dates keep the type pyarrow's JSON reader gave them in earlier runs.
  from pipeline.json_lines import sample_schema
  sampled = sample_schema(io.BytesIO(
      b'{"d": "2020-01-02", "n": 1, "s": "x"}\n{"d": "2020-01-03 10:00:00"}\n'),
      max_review_bytes=1000)
  assert sampled.field("d").type == pa.timestamp("s")
  assert sampled.field("n").type == pa.int64()
  assert sampled.field("s").type == pa.string()
  assert str(carried_value("2020-01-02", pa.timestamp("s"))) == "2020-01-02 00:00:00"
  for value in ("ten", 2.5, [1]):
    with pytest.raises(ValueError, match="is not int64"):
      carried_value(value, pa.int64())


def test_json_lines_columns_are_sampled_within_the_runs_review_limit(tmp_path):
  """Catches: planning sampling JSON Lines with the default limit, so that
  a file whose reviews all exceed it fails to plan although the run was
  given a limit that admits them."""
  from pipeline.json_lines import line_limit
  from pipeline.settings import DEFAULT_MAX_REVIEW_BYTES
  path = tmp_path / "long.jsonl"
  text = "word " * (line_limit(DEFAULT_MAX_REVIEW_BYTES) // 5 + 1)
  with path.open("w") as f:
    for review_id in ("r1", "r2"):
      f.write(json.dumps({"review_id": review_id, "text": text, "stars": 4})
              + "\n")
  with pytest.raises(InputError, match="no JSON object"):
    plan_input(str(path), carry=["stars"])
  plan = plan_input(str(path), carry=["stars"],
                    max_review_bytes=2 * DEFAULT_MAX_REVIEW_BYTES)
  assert plan.carried_fields == [pa.field("stars", pa.int64())]


def test_empty_parts_of_a_folder_hold_no_records(reviews, tmp_path):
  """Catches: one empty CSV or JSON Lines part (what Spark writes for an
  empty partition) failing the whole run at planning."""
  for kind in ("csv", "jsonl"):
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "csv":
      pcsv.write_csv(reviews, folder / "part-0.csv")
    else:
      (folder / "part-0.jsonl").write_text("".join(
          json.dumps(row) + "\n" for row in reviews.to_pylist()))
    (folder / f"part-1.{kind}").write_bytes(b"")
    plan = plan_input(str(folder))
    assert [pathlib.Path(p).name for p, _ in plan.files] == [f"part-0.{kind}"]
    (folder / f"part-0.{kind}").write_bytes(b"")
    with pytest.raises(InputError, match="every file it matches is empty"):
      plan_input(str(folder))


def test_a_damaged_archive_fails_the_run_naming_it(tiny_model_dir, tmp_path):
  """Catches: a file named .gz that is not gzip failing the run with the
  decompressor's words only ("incorrect header check"), naming no file."""
  from pipeline.run import PipelineFailed
  folder = tmp_path / "texts"
  folder.mkdir()
  with gzip.open(folder / "good.txt.gz", "wt") as f:
    f.write("a fine film\n")
  (folder / "damaged.txt.gz").write_text("not gzip at all\n")
  with pytest.raises(PipelineFailed,
                     match=r"damaged\.txt\.gz: cannot be read to its end"):
    _score(tmp_path, str(folder / "*.txt.gz"), tiny_model_dir, "--format=text")
  assert not (tmp_path / "out" / "s-manifest.json").exists()


def test_a_column_carried_twice_is_named(reviews, tmp_path):
  """Catches: `--carry-columns rating,rating` or `rating:r,label:r`
  reported as a clash with an output column."""
  pq.write_table(reviews, tmp_path / "r.parquet")
  for carry, message in ((["rating", "rating"], "column 'rating' is named twice"),
                         (["rating:r", "label:r"], "output name 'r' is named twice")):
    with pytest.raises(InputError, match=message):
      plan_input(str(tmp_path / "r.parquet"), carry=carry)


def test_a_folder_of_mixed_kinds_is_refused_in_one_line(reviews, tiny_model_dir,
                                                       tmp_path):
  """Catches: auto-detection silently taking table files for one-review
  files (every part dead-lettered as one "review"), and a refusal that does
  not name the kinds, takes more than one line or leaves output behind."""
  from click.testing import CliRunner

  from reviewscore.cli import main
  folder = tmp_path / "parts"
  folder.mkdir()
  pq.write_table(reviews, folder / "a.parquet")
  pcsv.write_csv(reviews, folder / "b.csv")
  with pytest.raises(InputError, match=r"files of mixed kinds \(csv, parquet\)"):
    plan_input(str(folder))
  # As users meet it: one line naming the kinds, exit 1, nothing written.
  for pattern in (str(folder), str(folder / "*")):
    result = CliRunner().invoke(main, [
        "score", "--input", pattern, "--model", str(tiny_model_dir),
        "--output", str(tmp_path / "out" / "s")])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.output.strip().splitlines() == [
        f"Error: {pattern}: files of mixed kinds (csv, parquet); match one "
        "kind, or name it with --format"], result.output
    assert not (tmp_path / "out").exists()


def test_training_data_from_csv_a_glob_and_a_folder_of_parts(reviews,
                                                             tmp_path):
  """Catches: `train --data` refusing CSV, JSON Lines, globs or parts, and
  parts whose rows go missing."""
  renamed = reviews.rename_columns(["id", "body", "label", "stars"])
  pcsv.write_csv(renamed.slice(0, 8), tmp_path / "a.csv")
  pcsv.write_csv(renamed.slice(8, 8), tmp_path / "b.csv")
  (tmp_path / "c.jsonl").write_text("".join(
      json.dumps(r) + "\n" for r in renamed.slice(16).to_pylist()))
  (tmp_path / "_SUCCESS").write_text("")
  columns = dict(text_column="body", label_column="label", id_column="id")
  single = data_lib.read_labelled(tmp_path / "a.csv", **columns)
  assert single.ids == renamed["id"].to_pylist()[:8]
  globbed = data_lib.read_labelled(tmp_path / "*.csv", **columns)
  assert len(globbed) == 16
  folder = data_lib.read_labelled(tmp_path, **columns)
  assert sorted(folder.ids) == sorted(renamed["id"].to_pylist())
  assert list(folder.labels) == [
      dict(zip(renamed["id"].to_pylist(), renamed["label"].to_pylist()))[i]
      for i in folder.ids]
  with pytest.raises(data_lib.DataError, match="--text-column"):
    data_lib.read_labelled(tmp_path / "a.csv", text_column="text")
  # No id column: refused, unless rows may be numbered.
  without_ids = dict(columns, id_column="review_id")
  with pytest.raises(data_lib.DataError, match="--id-column.*--positional-ids"):
    data_lib.read_labelled(tmp_path / "a.csv", **without_ids)
  numbered = data_lib.read_labelled(tmp_path / "a.csv", **without_ids,
                                    positional_ids=True)
  assert numbered.ids == [f"a.csv:{i}" for i in range(8)]


def test_training_reads_bytes_text_and_names_a_missing_label(reviews,
                                                             tmp_path):
  """Catches: texts stored as bytes read as "null or empty text", and a
  file whose labels are all null reported as "0 reviews are too few"."""
  as_bytes = reviews.set_column(
      1, "text", pa.array([t.encode() for t in reviews["text"].to_pylist()],
                          pa.binary()))
  pq.write_table(as_bytes, tmp_path / "bytes.parquet")
  read = data_lib.read_labelled(tmp_path / "bytes.parquet")
  assert read.texts == reviews["text"].to_pylist()
  broken = as_bytes.set_column(1, "text", pa.array([b"\xff\xfe"] * len(reviews)))
  pq.write_table(broken, tmp_path / "broken.parquet")
  with pytest.raises(data_lib.DataError, match="bytes that are not UTF-8"):
    data_lib.read_labelled(tmp_path / "broken.parquet")
  unlabelled = reviews.set_column(2, "label", pa.nulls(len(reviews), pa.int64()))
  pq.write_table(unlabelled, tmp_path / "unlabelled.parquet")
  with pytest.raises(data_lib.DataError, match="all 24 rows have a null 'label'"):
    data_lib.read_labelled(tmp_path / "unlabelled.parquet")


def test_split_named_parts_keep_test_out_of_training(reviews, tmp_path):
  """Catches: a folder with train.csv.gz and test.csv.gz read as one set of
  parts (test reviews trained on), and evaluate scoring train as test."""
  with gzip.open(tmp_path / "train.csv.gz", "wb") as f:
    pcsv.write_csv(reviews.slice(0, 16), f)
  with gzip.open(tmp_path / "test.csv.gz", "wb") as f:
    pcsv.write_csv(reviews.slice(16), f)
  train = data_lib.read_labelled(tmp_path, "train")
  test = data_lib.read_labelled(tmp_path, "test")
  assert train.ids == reviews["review_id"].to_pylist()[:16]
  assert test.ids == reviews["review_id"].to_pylist()[16:]
  (tmp_path / "test.csv.gz").unlink()
  with pytest.raises(data_lib.DataError, match="no 'test' split"):
    data_lib.read_evaluation_set(tmp_path, "test")


def test_escaped_utf8_keeps_valid_text_and_gives_back_the_files_bytes():
  """The CSV codec: valid UTF-8 split anywhere between chunks decodes as
  itself (a character cut by a chunk boundary must not be escaped as bad
  bytes), and `original` gives back exactly the file's bytes, also for
  real characters in the private-use range the escapes use (icon fonts),
  which must not be taken for escaped bytes."""
  import codecs
  from pipeline import escaped_utf8
  escaped_utf8.register()
  icons = "\U000F0041 \U000F00E9 \U000F0100"
  data = f"café ☕ 𝄞 fine {icons}".encode() + b" \xff\xe9 end \xc3"
  decoder = codecs.getincrementaldecoder(escaped_utf8.ENCODING)()
  text = "".join(decoder.decode(data[i:i + 1]) for i in range(len(data)))
  text += decoder.decode(b"", final=True)
  assert text.startswith("café ☕ 𝄞 fine ")
  assert text == data.decode(escaped_utf8.ENCODING)
  assert escaped_utf8.original(text) == data
  assert escaped_utf8.original(text.encode()) == data
  assert escaped_utf8.original(text.encode()).decode("utf-8", "replace") == (
      f"café ☕ 𝄞 fine {icons} \ufffd\ufffd end \ufffd")
  assert escaped_utf8.original("plain".encode()) == b"plain"
