"""Paths on any Beam filesystem, and whether Beam can reach one at all.

Every path option accepts any Beam filesystem URL (gs://, s3://, local);
Beam's support for a cloud comes with an extra, and without it Beam raises a
ValueError deep in a stack trace, so callers check `missing_filesystem`
before handing a path to the helpers below.
"""
import os
import shutil
import tempfile
from typing import Optional, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# URL scheme -> the reviewscore extra that installs Beam's support for it.
_EXTRA_FOR_SCHEME = {"gs": "gcp", "s3": "aws"}


def missing_filesystem(path: str) -> Optional[str]:
  """None when Beam has a filesystem for `path`, else why not."""
  try:
    FileSystems.get_filesystem(path)
  except ValueError:
    scheme = path.split("://", 1)[0]
    extra = _EXTRA_FOR_SCHEME.get(scheme)
    hint = (f"pip install 'reviewscore[{extra}]'" if extra
            else "install Beam's support for it")
    return f"{path}: no filesystem for {scheme}:// in this environment ({hint})"
  return None


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
    destination = os.path.join(target, *metadata.path[len(base):].split("/"))
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    with FileSystems.open(metadata.path,
                          compression_type=CompressionTypes.UNCOMPRESSED) as src, \
        open(destination, "wb") as out:
      shutil.copyfileobj(src, out, 1 << 20)
  return target
