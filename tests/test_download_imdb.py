"""`download-imdb`: the real download code against a server on 127.0.0.1.

The tests build a small aclImdb-shaped archive from reviews they write
themselves (no IMDB data needed: these tests run where none is present); the
server serves it whole, corrupted, cut short, or held until a second run
waits for the first. What each test catches is in its docstring.
"""
import hashlib
import http.server
import io
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reviewscore.cli import main
from train.data.imdb_download import DownloadError, download_imdb

PER_CLASS = 6
# Review numbers that sort otherwise as text ("10" < "2"): the writer must
# order them as numbers, as the real files are.
NUMBERS = (0, 2, 10, 11, 100, 1234)
TESTS = pathlib.Path(__file__).resolve().parent
README = TESTS.parent / "README.md"


def _review(split, kind, number):
  """A review's row as the Parquet files hold it, and its text: unique,
  with IMDB's <br /> breaks, quotes and text that is not ASCII."""
  rating = {"neg": 1 + number % 4, "pos": 7 + number % 4, "unsup": 0}[kind]
  word = {"neg": "dull and badly acted", "pos": "wonderful, a great cast",
          "unsup": "a film I watched once"}[kind]
  text = (f'Review {number} of {split}/{kind}: "{word}".<br /><br />'
          f"The café scene — naïve or not — {'!' * (number % 3 + 1)}")
  return {"review_id": f"{split}/{kind}/{number}_{rating}", "text": text,
          "label": {"neg": 0, "pos": 1, "unsup": None}[kind],
          "rating": rating}


def expected_rows(split):
  """The rows `download_imdb` must write for `split`, in order: negative
  then positive reviews, each by number (train/unsup for unsup)."""
  kinds = ("unsup",) if split == "unsup" else ("neg", "pos")
  return [_review("train" if split == "unsup" else split, kind, number)
          for kind in kinds for number in NUMBERS[:PER_CLASS]]


@pytest.fixture(scope="module")
def archive_bytes():
  """aclImdb/{train,test}/{pos,neg} and train/unsup, as in the real archive,
  with its other files (which are no reviews) beside them."""
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
    def add(name, text):
      data = text.encode("utf-8")
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
    folder = tarfile.TarInfo("aclImdb/train/pos")
    folder.type = tarfile.DIRTYPE
    tar.addfile(folder)
    add("aclImdb/README", "not a review")
    add("aclImdb/imdb.vocab", "the\nfilm\n")
    add("aclImdb/train/urls_pos.txt", "http://www.imdb.com/title/tt0/\n")
    rows = [row for split in ("train", "test", "unsup")
            for row in expected_rows(split)]
    for row in reversed(rows):  # out of order: the writer must sort
      add(f"aclImdb/{row['review_id']}.txt", row["text"])
  return buffer.getvalue()


class _Server:
  """Serves `routes` (path -> bytes, or (bytes, declared length)) locally;
  a path under /held/ is the same route, whose first request is answered
  only when `hold(server)` returns."""

  def __init__(self, routes, hold=None):
    self.routes, self.hits, self.hold = routes, [], hold
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):
        server.hits.append(self.path)
        path = self.path
        if path.startswith("/held/"):
          if server.hold and server.hits.count(self.path) == 1:
            server.hold(server)
          path = path[len("/held"):]
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
               "/cut.tar.gz": (archive_bytes[:len(archive_bytes) // 2],
                               len(archive_bytes))})
  yield s
  s.close()


def test_download_verifies_converts_and_reuses_the_archive(
    server, archive_bytes, tmp_path):
  """Catches: wrong schema or labels, unsorted rows (or rows sorted by their
  numbers as text), unsup mixed into train, files that are no reviews read
  as reviews, and a rerun that downloads again instead of reusing a
  verified archive."""
  sha = hashlib.sha256(archive_bytes).hexdigest()
  lines = []
  counts = download_imdb(tmp_path, url=server.url + "/aclImdb_v1.tar.gz",
                         sha256=sha, progress=lines.append)
  assert counts == {"train": 2 * PER_CLASS, "test": 2 * PER_CLASS,
                    "unsup": PER_CLASS}
  assert any("verified" in line for line in lines)
  for split in ("train", "test", "unsup"):
    got = pq.read_table(tmp_path / f"{split}.parquet")
    # The layout of ../shared/data/imdb, which the rest of the project reads.
    assert [(f.name, str(f.type)) for f in got.schema] == [
        ("review_id", "string"), ("text", "string"), ("label", "int8"),
        ("rating", "int8")]
    assert got.to_pylist() == expected_rows(split)
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


def _a_thread_here_waits_on_a_lock() -> bool:
  """Whether the kernel lists a thread of this process as waiting for a
  file lock (Linux's /proc/locks marks waiters with "->")."""
  pid = str(os.getpid())
  with open("/proc/locks") as f:
    return any(len(parts) > 5 and parts[1] == "->" and parts[5] == pid
               for parts in (line.split() for line in f))


@pytest.mark.skipif(not os.path.exists("/proc/locks"),
                    reason="sees the waiting run in Linux's /proc/locks")
def test_downloads_into_one_folder_take_turns(archive_bytes, tmp_path):
  """Catches: two runs at once into one folder (two test workers, the tests
  beside run_local.sh) both fetching into the same partial file, or the
  later one converting again what the earlier one wrote.

  The overlap is forced: the server holds the first run's download until
  the second run waits for the folder's lock (or, where runs do not take
  turns, until the second run asks for the archive too)."""
  sha = hashlib.sha256(archive_bytes).hexdigest()
  route = "/held/aclImdb_v1.tar.gz"
  results, lines, seen = [], [], []

  def hold(server):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.hits.count(route) < 2:
      if _a_thread_here_waits_on_a_lock():
        seen.append("waiting")
        return
      time.sleep(0.01)

  server = _Server({"/aclImdb_v1.tar.gz": archive_bytes}, hold=hold)

  def download():
    results.append(download_imdb(tmp_path, url=server.url + route,
                                 sha256=sha, progress=lines.append))

  threads = [threading.Thread(target=download) for _ in range(2)]
  try:
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join(timeout=120)
  finally:
    server.close()
  assert not any(thread.is_alive() for thread in threads)
  assert server.hits.count(route) == 1, server.hits
  assert seen == ["waiting"], "the second run never waited for the first"
  assert len(results) == 2 and results[0] == results[1], results
  assert results[0] == {"train": 2 * PER_CLASS, "test": 2 * PER_CLASS,
                        "unsup": PER_CLASS}
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


def _closed_port() -> int:
  with socket.socket() as s:  # a port with nobody listening
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _pytest(args, cwd, **environment):
  """A pytest run of its own; (exit status, its output's lines)."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("REVIEWSCORE_", "PYTEST_"))}
  done = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
      cwd=cwd, env={**env, **environment}, capture_output=True, text=True,
      timeout=300)
  return done.returncode, (done.stdout + done.stderr).splitlines()


def test_without_the_data_tests_that_need_it_stop_in_one_line(tmp_path):
  """Catches: each test that needs the IMDB data erroring on its own (about
  90 of them) where the data is missing and cannot be downloaded, instead
  of the run stopping before any test with one line saying how to provide
  it; in one process and in pytest-xdist's workers (the README's `-n 2`).
  (This module itself runs without the data.)"""
  needs_data = "def test_reads(imdb_dir):\n  assert imdb_dir.is_dir()\n"
  # $REVIEWSCORE_DATA naming a folder without the files: no download.
  empty = tmp_path / "empty"
  empty.mkdir()
  status, lines = _pytest(
      ["-p", "no:xdist", "tests/test_gcs.py", "tests/test_s3.py::"
       "test_a_folder_of_parts_on_a_bucket_is_planned_as_one_input"],
      cwd=TESTS.parent, REVIEWSCORE_DATA=str(empty))
  said = [line for line in lines if "IMDB data not found" in line]
  assert status == 2 and len(said) == 1, lines
  assert f"in {empty} ($REVIEWSCORE_DATA)" in said[0]
  assert "set REVIEWSCORE_DATA to a folder with train.parquet" in said[0]
  assert "no tests ran" in lines[-1], lines
  assert not [line for line in lines
              if line.startswith(("ERROR", "E ", "INTERNALERROR"))], lines
  # A checkout without ../shared and offline: data/imdb cannot be
  # downloaded (the mirror variable names a port nobody listens on).
  repo = tmp_path / "checkout"
  (repo / "tests").mkdir(parents=True)
  shutil.copy(TESTS / "conftest.py", repo / "tests")
  (repo / "tests" / "test_needs_data.py").write_text(needs_data)
  url = f"http://127.0.0.1:{_closed_port()}/aclImdb_v1.tar.gz"
  status, lines = _pytest(["-n", "2", "tests"], cwd=repo,
                          REVIEWSCORE_IMDB_URL=url)
  said = [line for line in lines if "IMDB data not found" in line]
  assert status == 2 and len(said) == 1, lines
  assert "not found in ../shared/data/imdb or data/imdb" in said[0]
  assert f"cannot download {url}" in said[0]
  assert "set REVIEWSCORE_DATA" in said[0] and "REVIEWSCORE_IMDB_URL" in said[0]
  assert "no tests ran" in lines[-1], lines
  assert not [line for line in lines
              if line.startswith(("ERROR", "E ", "INTERNALERROR"))], lines
  assert not list((repo / "data" / "imdb").glob("*.parquet"))
  # The data found, the same tests run.
  (empty / "train.parquet").write_bytes(b"")
  (empty / "test.parquet").write_bytes(b"")
  (empty / "unsup.parquet").write_bytes(b"")
  status, lines = _pytest(["-p", "no:xdist", "tests/test_needs_data.py"],
                          cwd=repo, REVIEWSCORE_DATA=str(empty))
  assert status == 0 and "1 passed" in lines[-1], lines


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
