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
import socket

import boto3
import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

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


def test_cloud_paths_keep_their_scheme_and_gs_names_the_missing_extra(
    tiny_model_dir, imdb_dir):
  """Without the gcp extra (as in the test environment) a gs:// model is
  refused in one line that names the URL unchanged and the extra to
  install, before anything reaches for the network."""
  assert join_path(f"s3://{BUCKET}/models/m1", "saved_model") == \
      f"s3://{BUCKET}/models/m1/saved_model"
  assert split_path(f"s3://{BUCKET}/scores/test") == (f"s3://{BUCKET}/scores",
                                                       "test")
  assert "pip install 'reviewscore[gcp]'" in missing_filesystem("gs://b/m1")
  for option in ("--model", "--input", "--output"):
    paths = {"--input": str(imdb_dir / "test.parquet"),
             "--model": str(tiny_model_dir), "--output": "out/s"}
    paths[option] = "gs://bucket/x/y"
    result = CliRunner().invoke(main, ["score", *[a for pair in paths.items()
                                                  for a in pair]])
    assert result.exit_code in (1, 2), result.output
    assert "gs://bucket/x/y: no filesystem for gs://" in result.output, (
        option, result.output)


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
