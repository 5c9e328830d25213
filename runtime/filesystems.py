"""Paths on any Beam filesystem, and whether Beam can reach one at all.

Every path option accepts any Beam filesystem URL (gs://, s3://, local);
Beam's support for a cloud comes with an extra, and without it Beam raises a
ValueError deep in a stack trace, so callers check `missing_filesystem`
before handing a path to the helpers below.
"""
import contextlib
import hashlib
import os
import pathlib
import shutil
import tempfile
from typing import Iterator, Optional, Sequence, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# URL scheme -> the reviewscore extra that installs Beam's support for it.
_EXTRA_FOR_SCHEME = {"gs": "gcp", "s3": "aws"}


def sha256_of(path) -> str:
  """The sha256 of a file on any Beam filesystem (local paths too), read in
  blocks: the one digest of files the project checks."""
  digest = hashlib.sha256()
  with FileSystems.open(str(path),
                        compression_type=CompressionTypes.UNCOMPRESSED) as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def outside_a_pipeline() -> None:
  """Gives Beam's filesystems default options where no pipeline set any.

  Beam's cloud filesystems read their settings (an S3 endpoint, a region)
  from pipeline options; commands that run no pipeline (train, evaluate,
  report) use the defaults, which take them from the environment
  (AWS_ENDPOINT_URL_S3, AWS_DEFAULT_REGION...). A pipeline's own options,
  once set, are kept.
  """
  if getattr(FileSystems, "_pipeline_options", None) is None:
    from apache_beam.options.pipeline_options import PipelineOptions
    FileSystems.set_options(PipelineOptions([]))


def missing_filesystem(path: str) -> Optional[str]:
  """None when Beam has a filesystem for `path`, else why not."""
  outside_a_pipeline()
  try:
    FileSystems.get_filesystem(path)
    # Beam registers its S3 filesystem without boto3 too, and fails only
    # at the first operation ("Missing boto3 requirement").
    if path.startswith("s3://"):
      import boto3  # noqa: F401
  except (ValueError, ImportError):
    return _no_filesystem(path)
  return None


def _no_filesystem(path: str) -> str:
  scheme = path.split("://", 1)[0]
  extra = _EXTRA_FOR_SCHEME.get(scheme)
  hint = (f"pip install 'reviewscore[{extra}]'" if extra
          else "install Beam's support for it")
  return f"{path}: no filesystem for {scheme}:// in this environment ({hint})"


def is_remote(path: str) -> bool:
  return "://" in path


def join_path(base: str, *parts: str) -> str:
  """`base/part/...` in the separators of `base`'s filesystem."""
  return FileSystems.join(base, *parts)


def split_path(path: str) -> Tuple[str, str]:
  """(folder, name). Beam's local split makes the folder absolute, which
  would change the ids and output names derived from relative paths, so
  local paths keep os.path's split."""
  return FileSystems.split(path) if is_remote(path) else os.path.split(path)


def relative_path(path: str, root: str) -> str:
  """`path` as named from `root` (unchanged where it is not below it)."""
  if not root:
    return path
  if is_remote(path):
    return path[len(root):].lstrip("/") if path.startswith(root) else path
  return os.path.relpath(path, root)


def write_atomically(path: str, data: bytes) -> None:
  """Writes `path` under a temporary name and renames it into place, so a
  reader never finds half a file."""
  staged = path + ".tmp"
  with FileSystems.create(staged) as f:
    f.write(data)
  FileSystems.rename([staged], [path])


def local_copy(directory: str) -> str:
  """`directory` itself when it is local, else a copy of it in a fresh local
  temporary folder.

  TensorFlow opens local paths (and gs://) but not s3:// or Beam's other
  filesystems; copying through Beam lets a worker load a SavedModel from any
  filesystem the job can read.
  """
  if not is_remote(directory):
    return directory
  base = directory.rstrip("/") + "/"
  found = FileSystems.match([base + "**"])[0].metadata_list
  if not found:
    raise FileNotFoundError(f"{directory}: no files to copy")
  target = tempfile.mkdtemp(prefix="reviewscore-model-")
  for metadata in found:
    download_file(metadata.path, os.path.join(
        target, *metadata.path[len(base):].split("/")))
  return target


def download_file(url: str, destination) -> None:
  """Copies one file from any Beam filesystem to a local path."""
  os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
  with FileSystems.open(url, compression_type=CompressionTypes.UNCOMPRESSED) as src, \
      open(destination, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)


def upload_file(path, url: str) -> None:
  """Copies one local file to any Beam filesystem."""
  with open(path, "rb") as source, FileSystems.create(
      url, compression_type=CompressionTypes.UNCOMPRESSED) as out:
    shutil.copyfileobj(source, out, 1 << 20)


class BeamPath:
  """The few `pathlib.Path` operations reading data needs, for a URL on any
  Beam filesystem (folders there are key prefixes)."""

  def __init__(self, url: str):
    self.url = url.rstrip("/") or url

  def __str__(self) -> str:
    return self.url

  def __repr__(self) -> str:
    return f"BeamPath({self.url!r})"

  def __eq__(self, other) -> bool:
    return isinstance(other, BeamPath) and other.url == self.url

  def __lt__(self, other) -> bool:
    return str(self) < str(other)

  def __hash__(self) -> int:
    return hash(self.url)

  def __truediv__(self, name: str) -> "BeamPath":
    return BeamPath(join_path(self.url, name))

  @property
  def name(self) -> str:
    return split_path(self.url)[1]

  @property
  def parent(self) -> "BeamPath":
    return BeamPath(split_path(self.url)[0])

  def expanduser(self) -> "BeamPath":
    return self

  def is_file(self) -> bool:
    found = FileSystems.match([self.url])[0].metadata_list
    return any(m.path.rstrip("/") == self.url for m in found)

  def is_dir(self) -> bool:
    return bool(self._below())

  def exists(self) -> bool:
    return self.is_file() or self.is_dir()

  def rglob(self, pattern: str):
    """Every file below this folder (`pattern` must be `*`)."""
    if pattern != "*":
      raise ValueError("BeamPath.rglob supports '*' only")
    return [BeamPath(m.path) for m in self._below()]

  def glob_matches(self):
    """The files a glob URL matches."""
    return [BeamPath(m.path) for m in FileSystems.match([self.url])[0].metadata_list]

  def _below(self):
    return FileSystems.match([self.url + "/**"])[0].metadata_list

  def open(self, *, decompress: bool):
    """A reader, decompressing by file name (.gz, .bz2...) when asked."""
    return FileSystems.open(
        self.url, compression_type=CompressionTypes.AUTO if decompress
        else CompressionTypes.UNCOMPRESSED)


def as_path(location):
  """`pathlib.Path` for a local path, `BeamPath` for a URL."""
  import pathlib
  text = str(location)
  if is_remote(text):
    outside_a_pipeline()
    return BeamPath(text)
  return pathlib.Path(text).expanduser()


# Where outputs bound for a bucket are written first (a local working copy,
# kept so that a cut run resumes): $REVIEWSCORE_WORK_DIR, else this.
WORK_DIR_ENV = "REVIEWSCORE_WORK_DIR"
_DEFAULT_WORK_DIR = os.path.join("~", ".cache", "reviewscore", "outputs")


def working_copy(url: str) -> pathlib.Path:
  """The local folder an output for `url` is written in, named after it."""
  base = os.path.expanduser(os.environ.get(WORK_DIR_ENV) or _DEFAULT_WORK_DIR)
  digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
  path = pathlib.Path(base) / digest / split_path(url.rstrip("/"))[1]
  path.mkdir(parents=True, exist_ok=True)
  return path


def upload_directory(local: pathlib.Path, url: str, *,
                     skip: Sequence[str] = (), last: Sequence[str] = ()
                     ) -> int:
  """Copies the files below `local` to `url`, never those under a folder
  named in `skip`, and those named in `last` after every other: a reader
  that waits for them finds everything else in place. Returns the count."""
  local = pathlib.Path(local)
  files = sorted(p for p in local.rglob("*") if p.is_file() and not
                 set(p.relative_to(local).parts[:-1]) & set(skip))
  ordered = ([p for p in files if p.name not in last] +
             [p for p in files if p.name in last])
  for path in ordered:
    upload_file(path, join_path(url.rstrip("/"), *path.relative_to(local).parts))
  return len(ordered)


class UnreachableOutput(ValueError):
  """An output location this environment cannot write: a URL on a
  filesystem it lacks, or a local path that is a file."""


@contextlib.contextmanager
def output_location(location, *, skip: Sequence[str] = (),
                    last: Sequence[str] = ()) -> Iterator[pathlib.Path]:
  """A local folder to write an output directory in.

  A local `location` is used as it is. For a URL (gs://, s3://...) the
  body writes a local working copy (`working_copy`), which is copied to the
  URL when the body succeeds (`upload_directory`: `skip`, `last`); a body
  that fails copies nothing.
  """
  text = str(location)
  if not is_remote(text):
    if os.path.exists(text) and not os.path.isdir(text):
      raise UnreachableOutput(f"{text} is a file, not a folder to write in")
    yield pathlib.Path(text)
    return
  unreachable = missing_filesystem(text)
  if unreachable:
    raise UnreachableOutput(unreachable)
  local = working_copy(text)
  yield local
  upload_directory(local, text, skip=skip, last=last)



def replace_dir(staging: pathlib.Path, final: pathlib.Path) -> None:
  """Moves a finished local directory into place, replacing an older one."""
  if final.exists():
    old = final.with_name(final.name + ".old")
    if old.exists():
      shutil.rmtree(old)
    final.rename(old)
    staging.rename(final)
    shutil.rmtree(old)
  else:
    staging.rename(final)


def same_prefix(a: str, b: str) -> bool:
  """Whether two paths or output prefixes name the same place."""
  if is_remote(a) or is_remote(b):
    return a.rstrip("/") == b.rstrip("/")
  return os.path.abspath(a) == os.path.abspath(b)
