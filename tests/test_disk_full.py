"""A disk that fills while scoring writes its output.

`reviewscore score` runs as users run it, in a process whose files may grow
to 4 KiB at most (RLIMIT_FSIZE, with SIGXFSZ ignored, so a write past the
limit fails with EFBIG as on a full disk). Catches: a failed shard write
that ends in a traceback, a manifest or final shard left that looks
complete, and a run that reports success.
"""
import glob
import pathlib
import resource
import signal
import subprocess
import sys

import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]

LIMIT_BYTES = 4096


def _small_files_only():
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


def test_scoring_onto_a_full_disk_commits_nothing_and_says_so(
    tiny_model_dir, imdb_dir, tmp_path):
  rows = pq.read_table(imdb_dir / "test.parquet",
                       columns=["review_id", "text"]).slice(0, 300)
  data = tmp_path / "in.parquet"
  pq.write_table(rows, data)
  out = tmp_path / "scores" / "full"
  done = subprocess.run(
      [sys.executable, "-m", "reviewscore.cli", "score", "--input", str(data),
       "--model", str(tiny_model_dir), "--output", str(out), "--num-shards",
       "1", "--precision", "float32"],
      capture_output=True, text=True, timeout=300, cwd=REPO,
      preexec_fn=_small_files_only)
  assert done.returncode == 1, done.stderr[-3000:]
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("Error:") and "nothing was committed" in last, last
  assert "Traceback" not in done.stderr
  assert not pathlib.Path(f"{out}-manifest.json").exists()
  assert not glob.glob(f"{out}-*-of-*.parquet")
  # The same command with room to write completes.
  again = subprocess.run(
      [sys.executable, "-m", "reviewscore.cli", "score", "--input", str(data),
       "--model", str(tiny_model_dir), "--output", str(out), "--num-shards",
       "1", "--precision", "float32"],
      capture_output=True, text=True, timeout=300, cwd=REPO)
  assert again.returncode == 0, again.stderr[-3000:]
  assert pq.read_table(glob.glob(f"{out}-*-of-*.parquet")[0]).num_rows == 300
