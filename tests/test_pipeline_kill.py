"""A scoring run killed with SIGKILL leaves nothing complete; a rerun heals."""
import glob
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import columns as c


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
