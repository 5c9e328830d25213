"""End-to-end check of `reviewscore download-imdb` on a full-size archive.

    .venv/bin/python scripts/check_download.py [--data ../shared/data/imdb]

Repacks the 100,000 reviews of a local copy of the data into an
aclImdb-shaped `aclImdb_v1.tar.gz`, serves it on 127.0.0.1, runs the real
command against it (as `run_local.sh` does on a machine without the data,
with REVIEWSCORE_IMDB_URL and REVIEWSCORE_IMDB_SHA256 naming the mirror),
and compares the three Parquet files it writes with the local copy, row for
row. No internet: the repacked archive is not byte-identical to Stanford's,
hence the checksum override.
"""
import argparse
import hashlib
import http.server
import io
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import pyarrow.parquet as pq

REPO = pathlib.Path(__file__).resolve().parents[1]


def build_archive(data: pathlib.Path, path: pathlib.Path) -> str:
  with tarfile.open(path, "w:gz") as tar:
    for split in ("train", "test", "unsup"):
      table = pq.read_table(data / f"{split}.parquet",
                            columns=["review_id", "text"])
      for review_id, text in zip(table["review_id"].to_pylist(),
                                 table["text"].to_pylist(), strict=True):
        body = text.encode("utf-8")
        info = tarfile.TarInfo(f"aclImdb/{review_id}.txt")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
  return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", type=pathlib.Path,
                      default=REPO.parent / "shared" / "data" / "imdb")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    served = tmp / "served"
    served.mkdir()
    start = time.monotonic()
    sha = build_archive(args.data, served / "aclImdb_v1.tar.gz")
    print(f"archive built in {time.monotonic() - start:.0f}s, sha256 {sha}")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(served), **k)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    env = dict(os.environ, REVIEWSCORE_IMDB_SHA256=sha,
               REVIEWSCORE_IMDB_URL=f"http://127.0.0.1:{httpd.server_address[1]}"
               "/aclImdb_v1.tar.gz")
    start = time.monotonic()
    done = subprocess.run([str(REPO / ".venv/bin/reviewscore"), "download-imdb",
                           str(tmp / "out")], env=env)
    print(f"download-imdb exited {done.returncode} after "
          f"{time.monotonic() - start:.0f}s")
    httpd.shutdown()
    if done.returncode:
      return 1
    same = True
    for split in ("train", "test", "unsup"):
      got = pq.read_table(tmp / "out" / f"{split}.parquet")
      want = pq.read_table(args.data / f"{split}.parquet")
      equal = got.equals(want.cast(got.schema))
      print(f"{split}: {got.num_rows:,} rows, identical to the local copy: "
            f"{equal}")
      same &= equal
  return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main())
