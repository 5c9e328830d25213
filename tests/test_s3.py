"""Cloud paths: a trained model, its input and its output on an S3-compatible
server (moto's, started by the test on 127.0.0.1), scored through
`reviewscore score` with Beam's own S3 options; and gs:// paths checked
without a network.

Catches: a path option that mangles URLs (click's Path made `gs://b` into
`gs:/b`), the launcher reading the model card before Beam knows the S3
endpoint, workers that hand an s3:// path to TensorFlow (which cannot open
it), and output committed anywhere but the bucket.
"""
import gzip
import io
import json
import os
import pathlib
import shutil
import socket
import subprocess

import boto3
import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.conftest import crash_test_command
from runtime.filesystems import join_path, missing_filesystem, split_path
from reviewscore.cli import main

BUCKET = "reviews"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
TINY_FLAGS = ["--epochs", "1", "--batch-size", "8", "--seq-length", "64",
              "--truncation", "head", "--pooling", "cls", "--precision",
              "float32"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
  from moto.server import ThreadedMotoServer
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
  server.start()
  endpoint = f"http://127.0.0.1:{port}"
  # Commands without Beam's --s3_* options (train, evaluate, report) find
  # the endpoint where boto3 looks for it, as users' own set-ups have it.
  environment = {**CREDENTIALS, "AWS_ENDPOINT_URL_S3": endpoint}
  saved = {k: os.environ.get(k) for k in environment}
  os.environ.update(environment)
  client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
  client.create_bucket(Bucket=BUCKET)
  yield endpoint, client
  server.stop()
  for key, value in saved.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value


def _upload_dir(client, local: pathlib.Path, prefix: str) -> None:
  for path in sorted(local.rglob("*")):
    if path.is_file():
      client.upload_file(str(path), BUCKET,
                         f"{prefix}/{path.relative_to(local).as_posix()}")


def _keys(client, prefix: str):
  pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                           Prefix=prefix)
  return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def test_model_input_and_output_on_s3(s3, tiny_model_dir, imdb_dir, tmp_path):
  endpoint, client = s3
  _upload_dir(client, tiny_model_dir, "models/tiny")
  table = pq.read_table(imdb_dir / "test.parquet",
                        columns=["review_id", "text", "label"]).slice(0, 40)
  buffer = io.BytesIO()
  pq.write_table(table, buffer)
  client.put_object(Bucket=BUCKET, Key="in/part-0.parquet", Body=buffer.getvalue())

  result = CliRunner().invoke(main, [
      "score", "--input", f"s3://{BUCKET}/in/*.parquet",
      "--model", f"s3://{BUCKET}/models/tiny",
      "--output", f"s3://{BUCKET}/scores/test", "--num-shards", "2",
      "--carry-columns", "label:true_label", "--precision", "float32",
      f"--s3_endpoint_url={endpoint}", "--s3_region_name=us-east-1",
      "--s3_access_key_id=testing", "--s3_secret_access_key=testing"])
  assert result.exit_code == 0, result.output
  assert "scored 40, dead-lettered 0 of 40 read" in result.output

  manifest = json.loads(client.get_object(
      Bucket=BUCKET, Key="scores/test-manifest.json")["Body"].read())
  assert manifest["counts"]["scored"] == 40
  assert all(path.startswith(f"s3://{BUCKET}/scores/test-")
             for path in manifest["scores"])
  assert [f"s3://{BUCKET}/{key}" for key in _keys(client, "scores/test-0")] == \
      sorted(manifest["scores"])
  scored = []
  for path in manifest["scores"]:
    body = client.get_object(Bucket=BUCKET, Key=path[len(f"s3://{BUCKET}/"):])
    scored.append(pq.read_table(io.BytesIO(body["Body"].read())))
  ids = sorted(i for t in scored for i in t["review_id"].to_pylist())
  assert ids == sorted(table["review_id"].to_pylist())
  report = CliRunner().invoke(main, [
      "report", f"s3://{BUCKET}/scores/test", "--labels", "true_label",
      "--out", f"s3://{BUCKET}/reports/test"],
      env={"REVIEWSCORE_WORK_DIR": str(tmp_path / "work")})
  assert report.exit_code == 0, report.output
  summary = json.loads(client.get_object(
      Bucket=BUCKET, Key="reports/test/summary.json")["Body"].read())
  assert summary["rows"] == summary["labelled"]["labelled_rows"] == 40
  # Nothing left behind in the bucket but the committed output.
  assert not [k for k in _keys(client, "scores/") if "staging" in k or
              k.endswith(".tmp")]


def test_bucket_paths_keep_their_scheme():
  """Catches: a path helper that mangles s3://bucket into s3:/bucket."""
  assert join_path(f"s3://{BUCKET}/models/m1", "saved_model") == \
      f"s3://{BUCKET}/models/m1/saved_model"
  assert split_path(f"s3://{BUCKET}/scores/test") == (f"s3://{BUCKET}/scores",
                                                       "test")


def _has_gcs() -> bool:
  try:
    import apache_beam.io.gcp.gcsfilesystem  # noqa: F401
  except ImportError:
    return False
  return True


@pytest.mark.skipif(_has_gcs(), reason="the [gcp] extra is installed here; "
                    "test_defaults' test_cloud_paths_keep_their_scheme_"
                    "without_the_extra makes it absent on every host")
def test_gs_names_the_missing_extra(tiny_model_dir, imdb_dir):
  """Without the gcp extra a gs:// path is refused in one line that names
  the URL unchanged and the extra to install, before anything reaches for
  the network."""
  assert missing_filesystem("gs://b/m1") == (
      "gs://b/m1: no filesystem for gs:// in this environment "
      "(pip install 'reviewscore[gcp]')")
  exits = {"--input": 1, "--model": 1, "--output": 2}
  for option in ("--model", "--input", "--output"):
    paths = {"--input": str(imdb_dir / "test.parquet"),
             "--model": str(tiny_model_dir), "--output": "out/s"}
    paths[option] = "gs://bucket/x/y"
    result = CliRunner().invoke(main, ["score", *[a for pair in paths.items()
                                                  for a in pair]])
    assert result.exit_code == exits[option], (option, result.output)
    assert "gs://bucket/x/y: no filesystem for gs://" in result.output, (
        option, result.output)


def test_a_folder_of_parts_on_a_bucket_is_planned_as_one_input(s3, imdb_dir):
  """Catches: a bucket folder (a key prefix, no wildcard) taken for a
  missing file ("no such file or directory"), its `_SUCCESS` marker or a
  console's folder objects read as input, and a bucket file named on its
  own taken for a folder."""
  from pipeline.plan import plan_input
  _, client = s3
  table = pq.read_table(imdb_dir / "test.parquet",
                        columns=["review_id", "text"]).slice(0, 6)
  for index in range(2):
    buffer = io.BytesIO()
    pq.write_table(table.slice(3 * index, 3), buffer)
    client.put_object(Bucket=BUCKET, Key=f"parts/day=1/part-{index}.parquet",
                      Body=buffer.getvalue())
  client.put_object(Bucket=BUCKET, Key="parts/day=1/_SUCCESS", Body=b"")
  # A bucket console's empty "folder" objects.
  client.put_object(Bucket=BUCKET, Key="parts/", Body=b"")
  client.put_object(Bucket=BUCKET, Key="parts/day=1/", Body=b"")
  for folder in (f"s3://{BUCKET}/parts", f"s3://{BUCKET}/parts/"):
    plan = plan_input(folder)
    assert plan.format == "parquet"
    assert [p for p, _ in plan.files] == [
        f"s3://{BUCKET}/parts/day=1/part-{i}.parquet" for i in range(2)]
  single = plan_input(f"s3://{BUCKET}/parts/day=1/part-0.parquet")
  assert len(single.files) == 1 and single.format == "parquet"


@pytest.mark.slow
def test_train_evaluate_and_report_read_from_s3(s3, tiny_encoder_dir, imdb_dir,
                                                tiny_checkpoint_dir, tmp_path):
  """Catches: `train --data` and `evaluate --model/--data` taking a URL for
  a local path (pathlib turns s3://b into s3:/b), gzip parts on a bucket
  not decompressed, and outputs on a bucket (`train --out`, `evaluate
  --out`, `import-encoder OUT`) written to a local folder named `s3:`,
  uploaded with the run's checkpoints, or replacing a finished model."""
  _, client = s3
  table = pq.read_table(imdb_dir / "train.parquet",
                        columns=["review_id", "text", "label"])
  labels = table["label"].to_numpy()
  rows = np.concatenate([np.flatnonzero(labels == k)[:40] for k in (0, 1)])
  table = table.take(np.sort(rows))
  for index, part in enumerate((table.slice(0, 40), table.slice(40))):
    buffer = io.BytesIO()
    pcsv.write_csv(part, buffer)
    client.put_object(Bucket=BUCKET, Key=f"labelled/part-{index}.csv.gz",
                      Body=gzip.compress(buffer.getvalue()))

  work = tmp_path / "work"
  os.environ["REVIEWSCORE_WORK_DIR"] = str(work)
  try:
    trained = CliRunner().invoke(main, [
        "train", "--data", f"s3://{BUCKET}/labelled", "--encoder",
        str(tiny_encoder_dir), "--out", f"s3://{BUCKET}/models/m", *TINY_FLAGS])
    assert trained.exit_code == 0, trained.output
    again = CliRunner().invoke(main, [
        "train", "--data", f"s3://{BUCKET}/labelled", "--encoder",
        str(tiny_encoder_dir), "--out", f"s3://{BUCKET}/models/m", *TINY_FLAGS])
    evaluated = CliRunner().invoke(main, [
        "evaluate", "--model", f"s3://{BUCKET}/models/m", "--data",
        f"s3://{BUCKET}/labelled/part-1.csv.gz", "--out",
        f"s3://{BUCKET}/eval/m"])
    imported = CliRunner().invoke(main, [
        "import-encoder", str(tiny_checkpoint_dir), f"s3://{BUCKET}/encoders/t"])
    # An encoder on a bucket trains like a local one.
    from_bucket = CliRunner().invoke(main, [
        "train", "--data", f"s3://{BUCKET}/labelled", "--encoder",
        f"s3://{BUCKET}/encoders/t", "--preprocessor",
        f"s3://{BUCKET}/encoders/t/preprocessor", "--out", str(tmp_path / "m2"),
        *TINY_FLAGS])
  finally:
    os.environ.pop("REVIEWSCORE_WORK_DIR")
  assert not pathlib.Path("s3:").exists()
  # The model is in the bucket, without the run's checkpoints; the card,
  # written last, describes it; a second run does not replace it.
  keys = _keys(client, "models/m/")
  assert "models/m/model_card.json" in keys
  assert "models/m/saved_model/saved_model.pb" in keys
  assert not [k for k in keys if "/checkpoints/" in k or "/best/" in k]
  card = json.loads(client.get_object(
      Bucket=BUCKET, Key="models/m/model_card.json")["Body"].read())
  assert card["model_name"] == "m"
  assert card["data"]["train"]["rows"] + card["data"]["validation"]["rows"] == 80
  assert card["data"]["train"]["source"].startswith(f"s3://{BUCKET}/labelled")
  assert again.exit_code == 1 and "already holds model_card.json" in again.output

  assert evaluated.exit_code == 0, evaluated.output
  metrics = json.loads(client.get_object(
      Bucket=BUCKET, Key="eval/m/metrics.json")["Body"].read())
  assert imported.exit_code == 0, imported.output
  assert {"encoders/t/encoder_info.json", "encoders/t/encoder/saved_model.pb"} <= \
      set(_keys(client, "encoders/t/"))
  assert from_bucket.exit_code == 0, from_bucket.output
  second = json.loads((tmp_path / "m2" / "model_card.json").read_text())
  assert second["encoder"]["name"] == f"s3://{BUCKET}/encoders/t"
  assert second["encoder"]["checkpoint"]["weights_sha256"] == \
      card["encoder"]["checkpoint"]["weights_sha256"]
  assert metrics["count"] == 40
  assert metrics["model_fingerprint"] == card["model_fingerprint"]


def test_state_mirror_copies_changes_and_deletions_and_survives_an_outage(
    s3, tmp_path, monkeypatch):
  """Catches: a mirror that copies files it already copied, keeps
  checkpoints the run deleted, lets a failing upload stop training, or
  forgets a file whose upload failed (the next push must copy it)."""
  from runtime import state_mirror
  from runtime.state_mirror import StateMirror
  _, client = s3
  run = tmp_path / "run"
  (run / "checkpoints").mkdir(parents=True)
  (run / "checkpoints" / "ckpt-5.index").write_bytes(b"a")
  (run / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-5"')
  (run / "train_state.json").write_text("{}")
  (run / "saved_model").mkdir()
  (run / "saved_model" / "x").write_text("not state")  # never mirrored
  lines = []
  client.create_bucket(Bucket="late-bucket")
  mirror = StateMirror(run, "s3://late-bucket/run", folders=("checkpoints",),
                       state_file="train_state.json", progress=lines.append)
  real_upload, calls = state_mirror.upload_file, []

  def flaky_upload(path, url):  # the network fails on the second file
    calls.append(url)
    if len(calls) == 2:
      raise OSError("connection reset")
    real_upload(path, url)
  monkeypatch.setattr(state_mirror, "upload_file", flaky_upload)
  mirror.push()
  assert lines[-1].startswith("warning: could not copy the run's state to "
                              "s3://late-bucket/run (OSError: connection reset)")
  assert _keys_of(client, "late-bucket") == ["run/checkpoints/ckpt-5.index"]
  mirror.push()
  assert _keys_of(client, "late-bucket") == [
      "run/checkpoints/checkpoint", "run/checkpoints/ckpt-5.index",
      "run/train_state.json"]
  # The file copied before the failure is not copied again.
  assert lines[-1].startswith("state copied to s3://late-bucket/run: 2 files")
  (run / "checkpoints" / "ckpt-10.index").write_bytes(b"b")
  (run / "checkpoints" / "ckpt-5.index").unlink()
  (run / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-10"')
  mirror.push()
  assert lines[-1].startswith("state copied to s3://late-bucket/run: 2 files")
  assert lines[-1].endswith("1 removed")
  assert _keys_of(client, "late-bucket") == [
      "run/checkpoints/checkpoint", "run/checkpoints/ckpt-10.index",
      "run/train_state.json"]
  assert client.get_object(Bucket="late-bucket", Key="run/checkpoints/checkpoint"
                           )["Body"].read() == b'model_checkpoint_path: "ckpt-10"'
  mirror.clear()
  assert _keys_of(client, "late-bucket") == ["run/train_state.json"]


def test_a_resume_takes_the_further_copy_of_a_run(s3, tmp_path):
  """Catches: a resume that rewinds this machine's run to an older copy in
  the bucket (its uploads had failed), one that ignores a bucket copy
  further on, and a finished run's state (checkpoints cleared) resumed as
  if it were a run: training would start over and replace the model."""
  from runtime.state_mirror import StateMirror, UnfinishedRunThere
  _, client = s3
  client.create_bucket(Bucket="runs")

  def copy_at(folder, step):
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folder / "checkpoints" / f"ckpt-{step}.index").write_text(str(step))
    (folder / "checkpoints" / "checkpoint").write_text(
        f'model_checkpoint_path: "ckpt-{step}"\n')
    (folder / "train_state.json").write_text(json.dumps({"at": step}))

  def mirror(folder, lines):
    return StateMirror(folder, "s3://runs/a", folders=("checkpoints",),
                       state_file="train_state.json", progress=lines.append)
  copy_at(tmp_path / "b", 20)
  mirror(tmp_path / "b", []).push()  # the bucket: step 20
  copy_at(tmp_path / "a", 30)
  lines = []
  mirror(tmp_path / "a", lines).start(resume=True)
  assert lines == ["resuming from this machine's copy (step 30; s3://runs/a "
                   "holds step 20)"]
  assert json.loads((tmp_path / "a" / "train_state.json").read_text()) == {"at": 30}
  copy_at(tmp_path / "c", 10)
  (tmp_path / "c" / "checkpoints" / "ckpt-10.index").unlink()
  mirror(tmp_path / "c", lines).start(resume=True)
  assert lines[-1].startswith("took the run's state from s3://runs/a: 3 files")
  assert sorted(p.name for p in (tmp_path / "c" / "checkpoints").iterdir()) == [
      "checkpoint", "ckpt-20.index"]
  assert json.loads((tmp_path / "c" / "train_state.json").read_text()) == {"at": 20}
  with pytest.raises(UnfinishedRunThere, match="pass --resume"):
    mirror(tmp_path / "d", lines).start(resume=False)
  mirror(tmp_path / "b", lines).clear()  # finished: only the state stays
  with pytest.raises(UnfinishedRunThere, match="checkpoints were cleared"):
    mirror(tmp_path / "d", lines).start(resume=True)


def _keys_of(client, bucket):
  return sorted(item["Key"] for item in
                client.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.mark.slow
def test_a_run_on_a_bucket_resumes_on_another_machine(
    s3, tiny_encoder_dir, crash_test_reviews, tmp_path, monkeypatch,
    sigkill_when, assert_same_training_state, unbroken_crash_test_run):
  """`reviewscore train --out s3://...` SIGKILLed in the middle of epoch 2,
  its machine then lost (its local working copy gone), resumes on another
  machine from the checkpoints kept on the bucket, and ends with the
  weights and optimizer state of the same run unbroken.

  Catches: checkpoints kept only on the machine that ran (a `--resume`
  elsewhere starts over), a state taken back incomplete (other weights or
  moments at the end), a new run started over one in progress on the
  bucket, and checkpoints left in the bucket beside the finished model.
  """
  _, client = s3
  url = f"s3://{BUCKET}/runs/cut"
  command = crash_test_command(crash_test_reviews, tiny_encoder_dir, url)
  steps_per_epoch = 12  # 96 training reviews (120 less the validation fifth)

  def bucket_checkpoint_step():
    try:
      index = client.get_object(Bucket=BUCKET, Key="runs/cut/checkpoints/checkpoint")
      client.head_object(Bucket=BUCKET, Key="runs/cut/train_state.json")
    except client.exceptions.ClientError:
      return None
    first = index["Body"].read().decode().splitlines()[0]
    return int(first.split("ckpt-")[1].rstrip('"'))

  def mid_epoch_2_on_the_bucket():  # step 15 or 20 of 24
    step = bucket_checkpoint_step()
    return step is not None and steps_per_epoch < step < 2 * steps_per_epoch \
        and step % steps_per_epoch != 0

  monkeypatch.setenv("REVIEWSCORE_WORK_DIR", str(tmp_path / "machine-a"))
  assert sigkill_when(command, mid_epoch_2_on_the_bucket), (
      "no checkpoint of the middle of epoch 2 reached the bucket")
  killed_at = bucket_checkpoint_step()
  shutil.rmtree(tmp_path / "machine-a")

  monkeypatch.setenv("REVIEWSCORE_WORK_DIR", str(tmp_path / "machine-b"))
  fresh = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert fresh.returncode == 1
  assert f"{url} already holds a run in progress: pass --resume" in fresh.stderr
  resumed = subprocess.run(command + ["--resume"], capture_output=True,
                           text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"took the run's state from {url}" in resumed.stderr
  assert f"resumed from step {killed_at} of 24" in resumed.stderr
  card = json.loads(client.get_object(
      Bucket=BUCKET, Key="runs/cut/model_card.json")["Body"].read())
  assert card["training"]["steps"] == card["training"]["total_steps"] == 24
  keys = _keys(client, "runs/cut/")
  assert not [k for k in keys if "/checkpoints/" in k or "/best/" in k]

  reference = unbroken_crash_test_run
  # The finished run's own checkpoints stay in machine B's working copy.
  working_copies = list((tmp_path / "machine-b").glob("*/cut"))
  assert len(working_copies) == 1
  assert_same_training_state(working_copies[0], reference)
