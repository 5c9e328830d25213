"""`download-imdb`: the real download code against a server on 127.0.0.1.

The test builds a small aclImdb-shaped archive from real IMDB reviews; the
server serves it whole, corrupted, or cut short. What each test catches is in
its docstring.
"""
import hashlib
import http.server
import io
import json
import os
import pathlib
import re
import shlex
import socket
import tarfile
import threading
import time

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reviewscore.cli import main
from train.imdb_download import DownloadError, download_imdb

PER_CLASS = 6
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def archive_bytes(imdb_dir):
  """aclImdb/{train,test}/{pos,neg} and train/unsup, as in the real archive."""
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
    def add(name, text):
      data = text.encode("utf-8")
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
    add("aclImdb/README", "not a review")
    for split in ("train", "test", "unsup"):
      table = pq.read_table(imdb_dir / f"{split}.parquet").to_pylist()
      rows = (table[:PER_CLASS] + table[12500:12500 + PER_CLASS]
              if split != "unsup" else table[:PER_CLASS])
      for row in reversed(rows):  # out of order: the writer must sort
        add(f"aclImdb/{row['review_id']}.txt", row["text"])
  return buffer.getvalue()


class _Server:
  """Serves `routes` (path -> bytes, or (bytes, declared length)) locally;
  a path under /slow/ is the same route answered after SLOW_S seconds."""
  SLOW_S = 0.5

  def __init__(self, routes):
    self.routes, self.hits = routes, []
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):
        server.hits.append(self.path)
        path = self.path
        if path.startswith("/slow/"):
          time.sleep(server.SLOW_S)
          path = path[len("/slow"):]
        body = server.routes.get(path)
        if body is None:
          self.send_error(404)
          return
        body, declared = body if isinstance(body, tuple) else (body, len(body))
        self.send_response(200)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def server(archive_bytes):
  corrupted = bytearray(archive_bytes)
  corrupted[len(corrupted) // 2] ^= 0xFF
  s = _Server({"/aclImdb_v1.tar.gz": archive_bytes,
               "/corrupted.tar.gz": bytes(corrupted),
               "/cut.tar.gz": (archive_bytes[:1000], len(archive_bytes))})
  yield s
  s.close()


def test_download_verifies_converts_and_reuses_the_archive(
    server, archive_bytes, imdb_dir, tmp_path):
  """Catches: wrong schema or labels, unsorted rows, unsup mixed into train,
  and a rerun that downloads again instead of reusing a verified archive."""
  sha = hashlib.sha256(archive_bytes).hexdigest()
  lines = []
  counts = download_imdb(tmp_path, url=server.url + "/aclImdb_v1.tar.gz",
                         sha256=sha, progress=lines.append)
  assert counts == {"train": 2 * PER_CLASS, "test": 2 * PER_CLASS,
                    "unsup": PER_CLASS}
  assert any("verified" in line for line in lines)
  for split in ("train", "test", "unsup"):
    got = pq.read_table(tmp_path / f"{split}.parquet")
    shared = pq.read_table(imdb_dir / f"{split}.parquet")
    assert [(f.name, f.type) for f in got.schema] == [
        (f.name, f.type) for f in shared.schema]
    expected = (shared.slice(0, PER_CLASS).to_pylist() +
                (shared.slice(12500, PER_CLASS).to_pylist()
                 if split != "unsup" else []))
    assert got.to_pylist() == expected
  assert server.hits.count("/aclImdb_v1.tar.gz") == 1
  written = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.parquet")}
  again = []
  assert download_imdb(tmp_path, url=server.url + "/aclImdb_v1.tar.gz",
                       sha256=sha, progress=again.append) == counts
  assert server.hits.count("/aclImdb_v1.tar.gz") == 1, "archive not reused"
  assert not any("converting" in line for line in again), again
  assert {p.name: p.stat().st_mtime_ns
          for p in tmp_path.glob("*.parquet")} == written
  assert not list(tmp_path.glob("*.partial"))
  # An archive newer than the Parquet files (replaced by hand) is converted.
  archive = tmp_path / "aclImdb_v1.tar.gz"
  later = max(written.values()) + 10**9
  os.utime(archive, ns=(later, later))
  third = []
  download_imdb(tmp_path, url=server.url + "/aclImdb_v1.tar.gz", sha256=sha,
                progress=third.append)
  assert any("converting" in line for line in third), third


def test_downloads_into_one_folder_take_turns(server, archive_bytes, tmp_path):
  """Catches: two runs at once into one folder (two test workers, the tests
  beside run_local.sh) both fetching into the same partial file, or the
  later one converting again what the earlier one wrote."""
  sha = hashlib.sha256(archive_bytes).hexdigest()
  results, lines = [], []

  def download():
    results.append(download_imdb(
        tmp_path, url=server.url + "/slow/aclImdb_v1.tar.gz", sha256=sha,
        progress=lines.append))

  threads = [threading.Thread(target=download) for _ in range(2)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=60)
  assert len(results) == 2 and results[0] == results[1], results
  assert server.hits.count("/slow/aclImdb_v1.tar.gz") == 1, server.hits
  assert sum("converting" in line for line in lines) == 1, lines
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "aclImdb_v1.tar.gz", "test.parquet", "train.parquet", "unsup.parquet"]


def test_corrupted_archive_is_refused_and_removed(server, archive_bytes,
                                                  tmp_path):
  """Catches: a damaged download converted or kept as if it were good."""
  sha = hashlib.sha256(archive_bytes).hexdigest()
  with pytest.raises(DownloadError, match="sha256"):
    download_imdb(tmp_path, url=server.url + "/corrupted.tar.gz", sha256=sha,
                  progress=lambda m: None)
  assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_interrupted_download_leaves_nothing_that_looks_complete(
    server, archive_bytes, tmp_path):
  """Catches: a cut-off transfer renamed to the final archive name."""
  sha = hashlib.sha256(archive_bytes).hexdigest()
  with pytest.raises(DownloadError,
                     match=r"download of .*/cut\.tar\.gz (broke off|ended) after"):
    download_imdb(tmp_path, url=server.url + "/cut.tar.gz", sha256=sha,
                  timeout_s=5, progress=lambda m: None)
  assert not (tmp_path / "aclImdb_v1.tar.gz").exists()
  assert not list(tmp_path.glob("*.parquet"))


def test_offline_fails_fast_naming_the_local_alternative(tmp_path):
  """Catches: a hang or a traceback where no server answers (CLI, exit 1)."""
  with socket.socket() as s:  # a port with nobody listening
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  start = time.monotonic()
  result = CliRunner().invoke(main, [
      "download-imdb", str(tmp_path / "data"),
      "--url", f"http://127.0.0.1:{port}/aclImdb_v1.tar.gz"])
  assert time.monotonic() - start < 10
  assert result.exit_code == 1, result.output
  assert result.exception is None or isinstance(result.exception, SystemExit)
  message = result.output.strip()
  assert len(message.splitlines()) == 1 and "--data" in message
  assert not list((tmp_path / "data").glob("*.parquet"))


def test_cli_checks_the_canonical_checksum_by_default(server, tmp_path):
  """Catches: the CLI accepting an archive that is not aclImdb v1 (the test
  archive is not, so the default checksum must refuse it)."""
  result = CliRunner().invoke(main, [
      "download-imdb", str(tmp_path), "--url",
      server.url + "/aclImdb_v1.tar.gz"])
  assert result.exit_code == 1, result.output
  assert isinstance(result.exception, SystemExit), result.exception
  last = result.output.strip().splitlines()[-1]  # after the progress lines
  assert last.startswith("Error: ") and "not the aclImdb v1 archive" in last
  assert not (tmp_path / "aclImdb_v1.tar.gz").exists()


def _install_and_use_commands():
  """The `reviewscore` lines of the README's "Install and use" block."""
  section = README.read_text().split("## Install and use", 1)[1]
  block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
  lines = block.replace("\\\n", " ").splitlines()
  commands = [shlex.split(line, comments=True) for line in lines]
  return [c for c in commands if c and c[0] == "reviewscore"]


@pytest.mark.slow
def test_readme_install_and_use_block_runs_as_written(
    server, archive_bytes, tmp_path, monkeypatch):
  """Each `reviewscore` line of the README's first block, as written, in an
  empty folder: the download comes from the test's server through the
  mirror variables the README names, then the offline encoder, training
  with every default (on the test archive's 10 training reviews), scoring
  and the report, then the Analytics section's report command. Catches the README drifting from what the commands accept
  or write. (Its first line, the set-up, is what .ci/run runs.)"""
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("REVIEWSCORE_IMDB_URL", server.url + "/aclImdb_v1.tar.gz")
  monkeypatch.setenv("REVIEWSCORE_IMDB_SHA256",
                     hashlib.sha256(archive_bytes).hexdigest())
  commands = _install_and_use_commands()
  assert [c[1] for c in commands] == [
      "download-imdb", "import-encoder", "train", "score", "report"]
  # The Analytics section's report, with the true labels joined by id.
  inline = re.search(r"`(reviewscore report [^`]*)`",
                     README.read_text().split("## Analytics", 1)[1]).group(1)
  commands.append(shlex.split(inline))
  for command in commands:
    result = CliRunner().invoke(main, command[1:])
    assert result.exit_code == 0, (command, result.output[-3000:])
  card = json.loads((tmp_path / "models/imdb/model_card.json").read_text())
  assert card["metrics"]["test"]["count"] == 2 * PER_CLASS
  summary = json.loads((tmp_path / "reports/test/summary.json").read_text())
  assert summary["rows"] == 2 * PER_CLASS
  assert "accuracy" in json.dumps(summary)  # the labels were found
