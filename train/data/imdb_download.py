"""The Large Movie Review Dataset (Maas et al. 2011), fetched and converted.

`download_imdb(DIR)` streams `aclImdb_v1.tar.gz` from its canonical address
(or a mirror) to `DIR/aclImdb_v1.tar.gz.partial` with a progress line,
checks its size and sha256, renames it into place, and writes
`train.parquet`, `test.parquet` and `unsup.parquet` in the layout this
project reads (review_id, text, label, rating; as in `../shared/data`).
Every file appears under its final name only when complete, so an
interrupted run leaves nothing that looks finished, and a rerun reuses a
verified archive instead of downloading it again (and the Parquet files
when they were written from it). Runs into one folder take turns (a lock on
the folder): two test workers, or tests beside `run_local.sh`, download once.
"""
import contextlib
import fcntl
import http.client
import os
import pathlib
import re
import tarfile
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, List, Optional

from schemas import columns
from runtime.filesystems import sha256_of

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SIZE = 84_125_825
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
URL_ENV = "REVIEWSCORE_IMDB_URL"
# A mirror that repacked the archive has another checksum: it names it here.
SHA256_ENV = "REVIEWSCORE_IMDB_SHA256"
ARCHIVE_NAME = "aclImdb_v1.tar.gz"
SPLIT_FILES = {"train": "train.parquet", "test": "test.parquet",
               "unsup": "unsup.parquet"}
ROW_GROUP_ROWS = 5000
_MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")


class DownloadError(Exception):
  """The archive could not be fetched or is not the one expected."""


def default_url() -> str:
  return os.environ.get(URL_ENV) or IMDB_URL


def default_sha256() -> str:
  return os.environ.get(SHA256_ENV) or IMDB_SHA256


def _fetch(url: str, target: pathlib.Path, *, timeout_s: float,
           progress: Callable[[str], None]) -> None:
  partial = target.with_name(target.name + ".partial")
  try:
    response = urllib.request.urlopen(url, timeout=timeout_s)
  except ValueError as e:  # not a URL at all
    raise DownloadError(f"{url}: not a download address ({e})") from None
  except (urllib.error.URLError, OSError) as e:
    reason = getattr(e, "reason", e)
    raise DownloadError(
        f"cannot download {url} ({reason}); offline, give `reviewscore train "
        f"--data` a local copy of the data (train.parquet/test.parquet or an aclImdb tree), "
        f"or set {URL_ENV} to a mirror") from None
  total = int(response.headers.get("Content-Length") or 0)
  done, last = 0, 0.0
  with response, open(partial, "wb") as out:
    while True:
      try:
        chunk = response.read(1 << 20)
      except (OSError, urllib.error.URLError, http.client.HTTPException) as e:
        raise DownloadError(f"download of {url} broke off after {done:,} "
                            f"bytes ({e}); run again to retry") from None
      if not chunk:
        break
      out.write(chunk)
      done += len(chunk)
      now = time.monotonic()
      if now - last >= 2.0:
        last = now
        share = f" ({100 * done / total:.0f}%)" if total else ""
        progress(f"downloading {url}: {done / 2**20:.1f} MiB{share}")
  if total and done != total:
    raise DownloadError(f"download of {url} ended after {done:,} of {total:,} "
                        "bytes; run again to retry")
  partial.replace(target)


def _verify(path: pathlib.Path, *, size: Optional[int], sha256: str) -> None:
  actual_size = path.stat().st_size
  if size is not None and actual_size != size:
    raise DownloadError(f"{path}: {actual_size:,} bytes, expected {size:,}: "
                        "not the aclImdb v1 archive (removed; run again)")
  digest = sha256_of(path)
  if digest != sha256:
    raise DownloadError(f"{path}: sha256 {digest}, expected {sha256}: the "
                        "download is damaged or not aclImdb v1 (removed; run "
                        "again)")


def _read_reviews(archive: pathlib.Path) -> Dict[str, List[tuple]]:
  """(sort key, review_id, text, label, rating) per split, from the tar."""
  rows = {split: [] for split in SPLIT_FILES}
  label_of = {"neg": 0, "pos": 1, "unsup": None}
  with tarfile.open(archive, "r:gz") as tar:
    for member in tar:
      match = _MEMBER.match(member.name)
      if not member.isfile() or not match:
        continue
      split, kind, number, rating = match.groups()
      text = tar.extractfile(member).read().decode("utf-8")
      split_name = "unsup" if kind == "unsup" else split
      rows[split_name].append(((kind, int(number)),
                               f"{split}/{kind}/{number}_{rating}", text,
                               label_of[kind], int(rating)))
  return rows


def _write_split(rows: List[tuple], path: pathlib.Path) -> None:
  import pyarrow as pa
  import pyarrow.parquet as pq
  rows = sorted(rows, key=lambda r: r[0])
  table = pa.table({
      columns.INPUT_ID: pa.array([r[1] for r in rows], pa.string()),
      columns.INPUT_TEXT: pa.array([r[2] for r in rows], pa.string()),
      columns.INPUT_LABEL: pa.array([r[3] for r in rows], pa.int8()),
      "rating": pa.array([r[4] for r in rows], pa.int8()),
  })
  partial = path.with_name(path.name + ".partial")
  pq.write_table(table, partial, row_group_size=ROW_GROUP_ROWS,
                 compression="zstd")
  partial.replace(path)


@contextlib.contextmanager
def _folder_lock(folder: pathlib.Path):
  """An exclusive lock on the folder itself (no lock file to leave behind),
  released when the process ends, however it ends."""
  fd = os.open(folder, os.O_RDONLY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # a filesystem without locks (some network mounts)
      pass
    yield
  finally:
    os.close(fd)


def _converted_counts(archive: pathlib.Path, out_dir: pathlib.Path
                      ) -> Optional[Dict[str, int]]:
  """Reviews per split when every Parquet file was written after `archive`
  (from it: each appears only when complete); None otherwise."""
  import pyarrow.parquet as pq
  paths = {split: out_dir / name for split, name in SPLIT_FILES.items()}
  if not all(path.is_file() and path.stat().st_mtime_ns >=
             archive.stat().st_mtime_ns for path in paths.values()):
    return None
  return {split: pq.ParquetFile(path).metadata.num_rows
          for split, path in paths.items()}


def download_imdb(out_dir, *, url: Optional[str] = None,
                  sha256: Optional[str] = None,
                  timeout_s: float = 10.0,
                  progress: Callable[[str], None] = print) -> Dict[str, int]:
  """Fetches (or reuses) the archive and writes the three Parquet files.

  Returns the number of reviews per split.
  """
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  with _folder_lock(out_dir):
    return _download(out_dir, url=url or default_url(),
                     sha256=sha256 or default_sha256(), timeout_s=timeout_s,
                     progress=progress)


def _download(out_dir: pathlib.Path, *, url: str, sha256: str,
              timeout_s: float, progress: Callable[[str], None]
              ) -> Dict[str, int]:
  size = IMDB_SIZE if sha256 == IMDB_SHA256 else None
  archive = out_dir / ARCHIVE_NAME
  if archive.exists():
    progress(f"checking the archive already in {archive}")
    try:
      _verify(archive, size=size, sha256=sha256)
    except DownloadError:
      archive.unlink()
      progress(f"{archive} is not the expected archive: downloading again")
    else:
      counts = _converted_counts(archive, out_dir)
      if counts is not None:
        progress(f"the Parquet files in {out_dir} are already written from it")
        return counts
  if not archive.exists():
    _fetch(url, archive, timeout_s=timeout_s, progress=progress)
    try:
      _verify(archive, size=size, sha256=sha256)
    except DownloadError:
      archive.unlink()
      raise
    progress(f"verified {archive} (sha256 {sha256[:12]}…)")
  progress("converting the reviews to Parquet")
  try:
    rows = _read_reviews(archive)
  except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as e:
    raise DownloadError(f"{archive}: cannot read it as aclImdb ({e})") from None
  if not rows["train"] or not rows["test"]:
    raise DownloadError(f"{archive}: no aclImdb/train or aclImdb/test reviews "
                        "in it")
  for split, name in SPLIT_FILES.items():
    _write_split(rows[split], out_dir / name)
  return {split: len(r) for split, r in rows.items()}
