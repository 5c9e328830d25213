"""The same scores on three runners and at several batch sizes.

DirectRunner in-process, DirectRunner with two worker processes, and
PortableRunner against a local job service whose SDK workers are separate
processes from a worker pool (`--environment_type=EXTERNAL`); the test starts
and stops both services.
"""
import contextlib
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tensorflow as tf
import tensorflow_text  # noqa: F401

from pipeline.run import run
from schemas import columns as c

REVIEWS = 100


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _wait_for_port(port: int, process, timeout: float = 60.0) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f"service exited with {process.returncode}")
    with contextlib.suppress(OSError), socket.create_connection(
        ("localhost", port), timeout=1):
      return
    time.sleep(0.2)
  raise TimeoutError(f"nothing listens on port {port}")


@contextlib.contextmanager
def _service(module: str, *args, port: int, stderr=subprocess.DEVNULL):
  # The worker pool starts SDK workers as plain `python`: this interpreter.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PATH=os.path.dirname(sys.executable) + os.pathsep +
             os.environ.get("PATH", ""))
  process = subprocess.Popen([sys.executable, "-m", module, *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=stderr)
  try:
    _wait_for_port(port, process)
    yield process
  finally:
    process.terminate()  # our own child, by its pid
    try:
      process.wait(timeout=20)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


@pytest.fixture(scope="module")
def reviews(imdb_dir, tmp_path_factory):
  table = pq.read_table(imdb_dir / "test.parquet")
  rows = pa.concat_tables([table.slice(100, REVIEWS // 2),
                           table.slice(12600, REVIEWS // 2)])
  path = tmp_path_factory.mktemp("runners") / "reviews.parquet"
  pq.write_table(rows, path, row_group_size=25)
  return path, rows


def _scores(tmp_path, name, data, model, *extra):
  result = run([f"--input={data}", f"--model={model}",
                f"--output={tmp_path / name / 'scores'}", "--num_shards=2",
                "--precision=float32",
                *extra], save_main_session=False, echo=lambda m: None)
  assert result.counts["read"] == REVIEWS
  assert result.counts["scored"] == REVIEWS
  assert result.counts["dead_lettered"] == 0
  table = pq.read_table(result.score_files)
  return dict(zip(table[c.REVIEW_ID].to_pylist(), table[c.SCORE].to_pylist()))


def _each_worker_said_its_precision_once(stderr: str) -> None:
  """Worker processes log at ERROR: their choice of precision must still
  reach the terminal, once per process that scored."""
  import re
  said = re.findall(r"^worker (\d+): scoring in float32 \(asked for\); "
                    r"tokenized by the model.s tokenizer copy$",
                    stderr, flags=re.MULTILINE)
  assert said, stderr[-2000:]
  assert len(said) == len(set(said)), said  # once per process
  assert str(os.getpid()) not in said  # the workers', not the launcher's


@pytest.mark.slow
def test_scores_agree_across_runners_and_batch_sizes(tiny_model_dir, reviews,
                                                      tmp_path, capfd):
  """The same scores on every runner and batching, and multi_processing's
  worker processes get the pipeline's options: their log level keeps
  Beam's INFO lines about channels off the user's terminal (a bare
  FnApiRunner() gave them none), while each worker process, there and in
  the portable runner's pool, says once which precision it took."""
  data, rows = reviews
  ids = rows["review_id"].to_pylist()
  model = tf.saved_model.load(str(tiny_model_dir / "saved_model"))
  reference = model.signatures["serving_default"](
      text=tf.constant(rows["text"].to_pylist()))["probability"].numpy()

  runs = {
      "in_process": _scores(tmp_path, "in_process", data, tiny_model_dir),
      "batch_3": _scores(tmp_path, "batch_3", data, tiny_model_dir,
                         "--min_batch_size=3", "--max_batch_size=3"),
      "bucketed": _scores(tmp_path, "bucketed", data, tiny_model_dir,
                          "--length_bucketing", "--bucket_boundaries=32,48,60",
                          "--min_batch_size=16", "--max_batch_size=16"),
      "arrival_order": _scores(tmp_path, "arrival", data, tiny_model_dir,
                               "--sort_wave_size=0"),
  }
  capfd.readouterr()
  runs["multi_processing"] = _scores(
      tmp_path, "multi", data, tiny_model_dir,
      "--direct_running_mode=multi_processing", "--direct_num_workers=2")
  workers_said = capfd.readouterr().err
  assert "state channel" not in workers_said, workers_said[-2000:]
  _each_worker_said_its_precision_once(workers_said)
  job_port, pool_port = _free_port(), _free_port()
  pool_said = tmp_path / "pool-stderr"
  with open(pool_said, "wb") as pool_stderr, \
      _service("apache_beam.runners.worker.worker_pool_main",
               f"--service_port={pool_port}", port=pool_port,
               stderr=pool_stderr), \
      _service("apache_beam.runners.portability.local_job_service_main",
               f"--port={job_port}", port=job_port):
    runs["portable"] = _scores(
        tmp_path, "portable", data, tiny_model_dir, "--runner=PortableRunner",
        f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
        f"--environment_config=localhost:{pool_port}")

  _each_worker_said_its_precision_once(pool_said.read_text())
  for name, scores in runs.items():
    assert sorted(scores) == sorted(ids), name
    np.testing.assert_allclose([scores[i] for i in ids], reference,
                               atol=1e-5, err_msg=name)
