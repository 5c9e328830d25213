"""A scoring run killed with SIGKILL leaves nothing complete; a rerun heals."""
import pytest
import glob
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import columns as c


@pytest.mark.slow
def test_sigkill_midway_then_rerun_gives_the_complete_output(
    tiny_model_dir, imdb_dir, tmp_path, sigkill_when):
  table = pq.read_table(imdb_dir / "test.parquet")
  table = pa.concat_tables([table.slice(0, 300), table.slice(12500, 300)])
  data = tmp_path / "in.parquet"
  pq.write_table(table, data, row_group_size=50)
  prefix = tmp_path / "scores" / "run"
  command = [sys.executable, "-m", "pipeline.run", f"--input={data}",
             f"--model={tiny_model_dir}", f"--output={prefix}",
             "--num_shards=3", "--max_batch_size=8"]
  staging = f"{tmp_path}/scores/.run.staging-*"

  def staged_score_rows():
    """Rows in finished score shards under the staging folder (Beam's temp
    files included); a shard being written has no footer yet and counts 0."""
    rows = 0
    for path in glob.glob(f"{staging}/**/*", recursive=True):
      try:
        metadata = pq.read_metadata(path)
      except (OSError, pa.ArrowException):  # a folder, gone, or unfinished
        continue
      if c.SCORE in metadata.schema.names:
        rows += metadata.num_rows
    return rows

  # Killed in the middle of the write: some score rows are on disk, the
  # commit has not run. Catches a commit that is not last (shards or a
  # manifest under final names before every shard is done).
  assert sigkill_when(command, lambda: staged_score_rows() > 0,
                      timeout_s=180), "no score shard was ever staged"
  assert staged_score_rows() > 0
  assert not os.path.exists(f"{prefix}-manifest.json")
  assert not glob.glob(f"{prefix}-?????-of-?????.parquet")
  assert not os.path.exists(f"{prefix}-errors")

  rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  shards = sorted(glob.glob(f"{prefix}-?????-of-?????.parquet"))
  assert len(shards) == 3
  scored = pq.read_table(shards)
  assert sorted(scored[c.REVIEW_ID].to_pylist()) == sorted(
      table["review_id"].to_pylist())
  # The same rows as a run that was never interrupted.
  clean = subprocess.run([*command[:5], f"--output={tmp_path}/clean/run",
                          *command[6:]], capture_output=True, text=True,
                         timeout=300)
  assert clean.returncode == 0, clean.stderr[-2000:]
  expected = pq.read_table(sorted(glob.glob(f"{tmp_path}/clean/run-?????-of-?????.parquet")))
  got = scored.sort_by(c.REVIEW_ID)
  want = expected.sort_by(c.REVIEW_ID)
  for column in (c.REVIEW_ID, c.LABEL_NAME, c.LABEL_ID):
    assert got[column].to_pylist() == want[column].to_pylist()
  # Batches may be cut differently between runs: float rounding only.
  np.testing.assert_allclose(got[c.SCORE].to_numpy(), want[c.SCORE].to_numpy(),
                             atol=1e-5)


def _worker_processes(parent: int):
  """Beam SDK worker processes started (through a shell) below `parent`."""
  found = []
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      cmdline = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
      ancestor = int(entry)
      for _ in range(4):  # worker <- sh <- launcher
        ancestor = int(open(f"/proc/{ancestor}/stat").read().rsplit(")", 1)[1].split()[1])
        if ancestor == parent:
          break
    except (OSError, ValueError, IndexError):
      continue
    if ancestor == parent and b"apache_beam.runners.worker.sdk_worker_main" in cmdline \
        and not cmdline[0].endswith(b"sh"):
      found.append(int(entry))
  return found


def _cpu_seconds(pid: int) -> float:
  fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_a_worker_killed_mid_bundle_fails_the_run_without_committing(
    tiny_model_dir, imdb_dir, tmp_path):
  """multi_processing: one of two SDK worker processes is SIGKILLed while
  it scores. docs/reliability.md: Beam does not retry a lost worker on this
  runner, so the run fails with one `Error:` line, exit 1, no traceback, and
  nothing committed. Catches a launcher that hangs, commits what the
  surviving worker wrote, reports success, or ends in a traceback.

  The launcher's output goes to files, not pipes: a chatty child cannot
  block on a full pipe while the test waits for a worker to get busy."""
  import signal
  import time
  # All 25,000 reviews: the tiny model scores 4,000 in about 6 s on two
  # workers, so a smaller input can end before either worker looks busy.
  table = pq.read_table(imdb_dir / "test.parquet")
  data = tmp_path / "in.parquet"
  pq.write_table(table, data, row_group_size=250)
  prefix = tmp_path / "scores" / "run"
  stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
  with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
    process = subprocess.Popen(
        [sys.executable, "-m", "reviewscore.cli", "score", "--input", str(data),
         "--model", str(tiny_model_dir), "--output", str(prefix),
         "--precision", "float32", "--max-batch-size", "8",
         "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        stdout=stdout, stderr=stderr, text=True)
  killed = None
  try:
    # A generous bound (two shared cores may be slow to start TensorFlow in
    # three processes); the kill itself waits for CPU work, not for time.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
      busy = [pid for pid in _worker_processes(process.pid)
              if _cpu_seconds(pid) >= 8.0]  # TensorFlow loaded, scoring
      if busy:
        killed = busy[0]
        os.kill(killed, signal.SIGKILL)
        break
      time.sleep(0.2)
    assert killed, ("no worker was ever busy before the run ended",
                    stderr_path.read_text()[-2000:])
    process.wait(timeout=300)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  err = stderr_path.read_text()
  assert process.returncode == 1, (process.returncode, err[-3000:])
  lines = [line for line in err.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("Error:")]
  assert len(errors) == 1 and lines[-1] == errors[0], err[-3000:]
  assert "the pipeline failed, nothing was committed" in errors[0], errors[0]
  assert "Traceback" not in err, err[-3000:]
  assert not os.path.exists(f"{prefix}-manifest.json")
  assert not glob.glob(f"{prefix}-?????-of-?????.parquet")
  assert not os.path.exists(f"{prefix}-errors")
  # No counts on stdout: the launcher did not report the run as done.
  assert "scored" not in stdout_path.read_text()
