"""gs:// paths on a Cloud Storage emulator (gcp-storage-emulator, started by
the test on 127.0.0.1): a trained model, an input glob and an output prefix
in a bucket, scored through `reviewscore score` with Beam's own GCS
filesystem (the `reviewscore[gcp]` extra, which the test extra installs),
as tests/test_s3.py does on moto's S3 server.

google-cloud-storage, which Beam's GCS IO uses, sends every request to
$STORAGE_EMULATOR_HOST when it is set; Beam connects anonymously where it
finds no Google credentials, which the test makes it find at once (Beam
itself would first retry the lookup for about 30 s).

Catches: a path option that mangles gs:// URLs, the launcher reading the
model card or the input through local paths, workers that hand a gs://
model to TensorFlow (whose own GCS client knows nothing of the emulator and
would reach for storage.googleapis.com), a glob over a bucket planned as a
single file, output committed anywhere but the bucket, and staging left in it.
"""
import io
import json
import pathlib

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reviewscore.cli import main

BUCKET = "reviews"


@pytest.fixture(scope="module")
def gcs():
  """(the emulator's URL, a google-cloud-storage bucket in it)."""
  reason = ("needs the gcp extra (pip install -e '.[test]' installs it with "
            "gcp-storage-emulator)")
  storage = pytest.importorskip("google.cloud.storage", reason=reason)
  emulator = pytest.importorskip("gcp_storage_emulator.server", reason=reason)
  pytest.importorskip("apache_beam.io.gcp.gcsfilesystem", reason=reason)
  from apache_beam.internal.gcp import auth
  from google.auth.credentials import AnonymousCredentials
  # Port 0: the kernel picks a free port, read back from the bound socket.
  server = emulator.create_server("127.0.0.1", 0, in_memory=True)
  server.start()
  try:
    host, port = server._api._httpd.server_address
    assert host == "127.0.0.1"
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
      patch.setenv("STORAGE_EMULATOR_HOST", endpoint)
      # Beam's credential lookup, done: none found, so its GCS IO makes an
      # anonymous client (what it does on any machine without credentials).
      patch.setattr(auth._Credentials, "_credentials_init", True)
      patch.setattr(auth._Credentials, "_credentials", None)
      client = storage.Client(project="test",
                              credentials=AnonymousCredentials())
      yield endpoint, client.create_bucket(BUCKET)
  finally:
    server.stop()


def _upload_dir(bucket, local: pathlib.Path, prefix: str) -> None:
  for path in sorted(local.rglob("*")):
    if path.is_file():
      bucket.blob(f"{prefix}/{path.relative_to(local).as_posix()}"
                  ).upload_from_filename(str(path))


def _names(bucket, prefix: str):
  return sorted(blob.name for blob in bucket.client.list_blobs(bucket,
                                                               prefix=prefix))


def test_model_input_glob_and_output_on_gcs(gcs, tiny_model_dir, imdb_dir,
                                            tmp_path, monkeypatch):
  _, bucket = gcs
  monkeypatch.chdir(tmp_path)  # a path taken for a local one lands here
  _upload_dir(bucket, tiny_model_dir, "models/tiny")
  table = pq.read_table(imdb_dir / "test.parquet",
                        columns=["review_id", "text", "label"]).slice(0, 40)
  for index, part in enumerate((table.slice(0, 25), table.slice(25))):
    buffer = io.BytesIO()
    pq.write_table(part, buffer)
    bucket.blob(f"in/part-{index}.parquet").upload_from_string(
        buffer.getvalue())
  # Not matched by the glob: must not be read.
  bucket.blob("in/notes.txt").upload_from_string(b"not a review\n")

  result = CliRunner().invoke(main, [
      "score", "--input", f"gs://{BUCKET}/in/*.parquet",
      "--model", f"gs://{BUCKET}/models/tiny",
      "--output", f"gs://{BUCKET}/scores/test", "--num-shards", "2",
      "--carry-columns", "label:true_label", "--precision", "float32"])
  assert result.exit_code == 0, result.output
  assert "scored 40, dead-lettered 0 of 40 read" in result.output

  manifest = json.loads(
      bucket.blob("scores/test-manifest.json").download_as_bytes())
  assert manifest["counts"]["scored"] == 40
  assert len(manifest["scores"]) == 2
  assert all(path.startswith(f"gs://{BUCKET}/scores/test-")
             for path in manifest["scores"])
  assert [f"gs://{BUCKET}/{name}" for name in _names(bucket, "scores/test-0")
          ] == sorted(manifest["scores"])
  scored = [pq.read_table(io.BytesIO(bucket.blob(
      path[len(f"gs://{BUCKET}/"):]).download_as_bytes()))
      for path in manifest["scores"]]
  rows = [row for t in scored for row in t.select(
      ["review_id", "true_label"]).to_pylist()]
  assert sorted((r["review_id"], r["true_label"]) for r in rows) == sorted(
      zip(table["review_id"].to_pylist(), table["label"].to_pylist()))
  # Nothing left behind in the bucket but the committed output, and
  # nothing written to a local folder named after the URL.
  assert not [n for n in _names(bucket, "") if "staging" in n or
              n.endswith(".tmp")]
  assert not pathlib.Path("gs:").exists()
  assert not list(tmp_path.iterdir())
