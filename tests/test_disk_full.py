"""A disk that fills while scoring writes its output.

`reviewscore score` runs as users run it, in a process whose files may grow
to 64 KiB at most (RLIMIT_FSIZE, set in the child only, with SIGXFSZ
ignored, so a write past the limit fails with EFBIG as a full disk fails
with ENOSPC). The limit is aimed at the output: the scored shard carries
the reviews' text (about 250 KB for these 300 reviews), while every other
file the run writes (Beam's pickled session, the dead-letter shard, the
manifest) stays far below it; the test checks both sides of that premise
and that the error names the score shards' write. Catches: a failed shard
write that ends in a traceback or in a line that does not say why, a
manifest or final shard left that looks complete, and a run that reports
success.
"""
import glob
import pathlib
import resource
import signal
import subprocess
import sys

import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]

LIMIT_BYTES = 64 * 1024


def _files_up_to_the_limit():
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


def test_scoring_onto_a_full_disk_commits_nothing_and_says_so(
    tiny_model_dir, imdb_dir, tmp_path):
  rows = pq.read_table(imdb_dir / "test.parquet",
                       columns=["review_id", "text"]).slice(0, 300)
  data = tmp_path / "in.parquet"
  pq.write_table(rows, data)
  out = tmp_path / "scores" / "full"
  command = [sys.executable, "-m", "reviewscore.cli", "score", "--input",
             str(data), "--model", str(tiny_model_dir), "--output", str(out),
             "--num-shards", "1", "--precision", "float32",
             "--carry-columns", "text"]
  done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                        cwd=REPO, preexec_fn=_files_up_to_the_limit)
  assert done.returncode == 1, done.stderr[-3000:]
  lines = [line for line in done.stderr.splitlines() if line.strip()]
  errors = [line for line in lines if line.startswith("Error:")]
  assert len(errors) == 1 and lines[-1] == errors[0], done.stderr[-3000:]
  # The cause, and where: the score shards' write, not another file.
  assert "nothing was committed" in errors[0], errors[0]
  assert "File too large" in errors[0], errors[0]
  assert "WriteScores" in errors[0], errors[0]
  assert "Traceback" not in done.stderr
  assert not pathlib.Path(f"{out}-manifest.json").exists()
  assert not glob.glob(f"{out}-*-of-*.parquet")
  assert not pathlib.Path(f"{out}-errors").exists()
  assert "scored" not in done.stdout
  # The partial work stays in the hidden staging folder, as the line says.
  left = {p for p in out.parent.rglob("*") if p.is_file()}
  assert all(f"/.{out.name}.staging-" in str(p) for p in left), left
  # The same command with room to write completes, and shows the limit hit
  # the output alone: its shard is over the limit, the rest far below.
  again = subprocess.run(command, capture_output=True, text=True,
                         timeout=300, cwd=REPO)
  assert again.returncode == 0, again.stderr[-3000:]
  shards = glob.glob(f"{out}-*-of-*.parquet")
  assert len(shards) == 1
  assert pq.read_table(shards[0]).num_rows == 300
  assert pathlib.Path(shards[0]).stat().st_size > 2 * LIMIT_BYTES
  others = [p for p in out.parent.rglob("*") if p.is_file()
            and str(p) != shards[0] and p not in left]
  assert others and all(p.stat().st_size < LIMIT_BYTES / 8 for p in others), [
      (p.name, p.stat().st_size) for p in others]
