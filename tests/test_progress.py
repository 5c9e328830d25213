"""Scoring progress a person can read: reviews done of the total, the rate
and the time left, from the workers' shared tally."""
import logging

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from pipeline import progress
from pipeline.progress import Expected, describe
from pipeline.run import run


def test_a_known_total_gives_share_rate_and_time_left():
  """Catches: a share or time left computed from the wrong numbers."""
  line = describe(12_500, 500.0, Expected(reviews=25_000))
  assert line == "12,500 of 25,000 reviews done (50%), 25.0/s, 8 min left"
  assert describe(25_000, 1000.0, Expected(reviews=25_000)).endswith(
      "(100%), 25.0/s, done")
  assert describe(10, 2.0, Expected(reviews=100)).endswith("18 s left")
  assert describe(10, 1.0, Expected(reviews=100_000)).endswith("2.8 h left")


def test_text_input_estimates_the_total_from_the_bytes_read():
  """Catches: an estimate that ignores how many bytes a review takes here
  (4,000 bytes read for 20 reviews: 200 a review, so 1 MB holds ~5,000)."""
  line = describe(10, 2.0, Expected(input_bytes=1_000_000), read=20,
                  bytes_read=4_000)
  assert line.startswith("10 of about 5,000 reviews done (0%), 5.0/s")
  assert describe(10, 2.0, Expected()) == (
      "10 reviews done, 5.0/s (the input's size is unknown)")


def test_a_worker_among_several_speaks_for_itself():
  """Catches: one worker's count shown as the job's (it has a quarter)."""
  line = describe(1_000, 100.0, Expected(reviews=6_000, workers=4))
  assert line == ("this worker: 1,000 reviews done, 10.0/s; the job's 6,000 "
                  "take about 50 s more if its 4 workers keep this pace")
  assert describe(5, 1.0, Expected(reviews=80, workers=None)) == (
      "this worker: 5 reviews done, 5.0/s; the job has 80")


class _Lines(logging.Handler):
  def __init__(self):
    super().__init__()
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


@pytest.fixture
def progress_lines():
  handler, log = _Lines(), progress.progress_log
  level = log.level
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  yield handler.lines
  log.removeHandler(handler)
  log.setLevel(level)


def test_the_tally_logs_every_interval_and_at_the_end(progress_lines):
  """Catches: a line per review, none at the end, or counts carried over
  from an earlier run in the same process."""
  for run_id in ("run-a", "run-b"):
    expected = Expected(run_id=run_id, reviews=5)
    for second in range(5):
      progress.record_done(expected, now=1000.0 + second * 8)
  # Per run: a line once 15 s have passed (at 16 s), and the last review's.
  assert progress_lines == [
      "3 of 5 reviews done (60%), 0.2/s, 11 s left",
      "5 of 5 reviews done (100%), 0.2/s, done"] * 2


def test_scoring_reports_done_of_the_total(tiny_model_dir, imdb_dir, tmp_path,
                                           progress_lines):
  """Catches: the launcher not telling the workers the total (Parquet: its
  footers), or dead letters left out of what is done."""
  rows = pq.read_table(imdb_dir / "test.parquet").slice(0, 30)
  texts = rows["text"].to_pylist()
  texts[3] = "   "  # dead-lettered: done all the same
  table = pa.table({"review_id": rows["review_id"], "text": texts})
  pq.write_table(table, tmp_path / "reviews.parquet", row_group_size=10)
  result = run([f"--input={tmp_path / 'reviews.parquet'}",
                f"--model={tiny_model_dir}",
                f"--output={tmp_path / 'scores' / 'run'}"], echo=lambda m: None)
  assert result.counts["dead_lettered"] == 1
  assert progress_lines[0].startswith("first review scored by this worker")
  assert progress_lines[-1].startswith("30 of 30 reviews done (100%)")

  progress_lines.clear()
  pcsv.write_csv(table, tmp_path / "reviews.csv")
  run([f"--input={tmp_path / 'reviews.csv'}", f"--model={tiny_model_dir}",
       f"--output={tmp_path / 'scores' / 'csv'}"], echo=lambda m: None)
  # CSV: no count up front, so no closing line; any line in between
  # estimates the total from the bytes read.
  assert progress_lines[0].startswith("first review scored by this worker")
  assert all(" of about " in line for line in progress_lines[1:])
  assert not any(line.startswith("30 of 30") for line in progress_lines)
