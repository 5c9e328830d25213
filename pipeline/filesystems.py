"""Whether Beam can reach a path's filesystem, said in one line if not.

Every path option accepts any Beam filesystem URL (gs://, s3://, local);
Beam's support for a cloud comes with an extra, and without it Beam raises a
ValueError deep in a stack trace.
"""
from typing import Optional

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
