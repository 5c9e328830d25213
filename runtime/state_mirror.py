"""A long run's resumable state, kept on its output URL while it runs.

A run whose `--out` is a URL works in a local copy and uploads the finished
directory at its end (`filesystems.output_location`). Its checkpoints would
otherwise live only on the machine that ran it, and a preemptible VM taken
back, or a work machine replaced, would take them along: `--resume`
elsewhere would find nothing to continue. The mirror copies the checkpoint
folders and the state file to the URL after every checkpoint, a `--resume`
on any machine first takes them back from there, and a finished run clears
them: the model is what stays.

On `--resume` the further of the two copies wins (by the step of its
latest checkpoint): a machine that comes back cannot rewind a run another
machine carried on, and one whose uploads failed a while keeps its own.
"""
import os
import pathlib
import re
import shutil
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from runtime.filesystems import download_file, is_remote, join_path, upload_file

# TensorFlow's CheckpointManager names its latest checkpoint in this file, so
# it goes up after the checkpoint files it names, and the state file last.
_CHECKPOINT_INDEX = "checkpoint"


class UnfinishedRunThere(ValueError):
  """The URL holds a run in progress and this one was not asked to resume."""


def _stat(path: pathlib.Path) -> Tuple[int, int]:
  info = path.stat()
  return info.st_size, info.st_mtime_ns


class StateMirror:
  """Copies `folders` and `state_file` of a local run directory to `url`."""

  def __init__(self, local, url: str, *, folders: Sequence[str],
               state_file: str, progress: Callable[[str], None] = print):
    self.local = pathlib.Path(local)
    self.url = url.rstrip("/")
    self.folders = tuple(folders)
    self.state_file = state_file
    self.progress = progress
    # Relative path -> (size, mtime) of the local file as last copied.
    self._copied: Dict[str, Tuple[int, int]] = {}

  @classmethod
  def for_output(cls, out, local, **kwargs) -> Optional["StateMirror"]:
    """A mirror for a URL output; None for a local one (nothing to keep)."""
    return cls(local, str(out), **kwargs) if is_remote(str(out)) else None

  def _url_of(self, relative: str) -> str:
    return join_path(self.url, *relative.split("/"))

  def _local_files(self) -> Dict[str, pathlib.Path]:
    found = {}
    for folder in self.folders:
      for path in sorted((self.local / folder).rglob("*")):
        if path.is_file():
          found[path.relative_to(self.local).as_posix()] = path
    state = self.local / self.state_file
    if state.is_file():
      found[self.state_file] = state
    return found

  def _remote_files(self) -> Dict[str, int]:
    """Relative path -> size of the state files at the URL."""
    patterns = ([self._url_of(folder) + "/**" for folder in self.folders] +
                [self._url_of(self.state_file)])
    found = {}
    for result in FileSystems.match(patterns):
      for metadata in result.metadata_list:
        found[metadata.path[len(self.url) + 1:]] = metadata.size_in_bytes
    return found

  def start(self, *, resume: bool) -> None:
    """Takes the URL's state for a resumed run, unless this machine's copy
    is as far on; refuses to start a new run over one in progress there."""
    remote = self._remote_files()
    if self.state_file not in remote:
      return
    if not resume:
      raise UnfinishedRunThere(
          f"{self.url} already holds a run in progress: pass --resume to "
          "continue it (from any machine) or choose another --out")
    remote_step = self._checkpoint_step(remote, self._read_remote)
    local_step = self._checkpoint_step(
        self._local_files(), lambda relative: (self.local / relative).read_text())
    if remote_step is None:
      if local_step is None:
        raise UnfinishedRunThere(
            f"{self.url} holds a finished run whose checkpoints were cleared: "
            "nothing to resume there; choose another --out")
      return
    if local_step is not None and local_step >= remote_step:
      self.progress(f"resuming from this machine's copy (step {local_step}; "
                    f"{self.url} holds step {remote_step})")
      return
    started = time.monotonic()
    for folder in self.folders:
      shutil.rmtree(self.local / folder, ignore_errors=True)
    (self.local / self.state_file).unlink(missing_ok=True)
    for relative in sorted(remote):
      destination = self.local / relative
      download_file(self._url_of(relative), str(destination))
      self._copied[relative] = _stat(destination)
    self.progress(f"took the run's state from {self.url}: {len(remote)} files, "
                  f"{sum(remote.values()) / 2**20:,.0f} MiB in "
                  f"{time.monotonic() - started:.1f} s")

  def _read_remote(self, relative: str) -> str:
    with FileSystems.open(self._url_of(relative)) as f:
      return f.read().decode("utf-8")

  @staticmethod
  def _checkpoint_step(files, read) -> Optional[int]:
    """The step of the latest checkpoint among `files` (relative paths), as
    TensorFlow's CheckpointManager names it in its index; None if none."""
    for relative in sorted(files):
      if os.path.basename(relative) == _CHECKPOINT_INDEX:
        found = re.search(r'model_checkpoint_path:\s*"[^"]*?(\d+)"',
                          read(relative))
        if found:
          return int(found.group(1))
    return None

  def push(self) -> None:
    """Copies what changed since the last push and deletes at the URL what
    the run deleted (checkpoints it no longer keeps). A failure is reported
    and left to the next push: training goes on."""
    local = self._local_files()
    changed = [relative for relative, path in local.items()
               if self._copied.get(relative) != _stat(path)]
    changed.sort(key=lambda relative: (
        relative == self.state_file,
        os.path.basename(relative) == _CHECKPOINT_INDEX))
    gone = [relative for relative in self._copied if relative not in local]
    started = time.monotonic()
    try:
      for relative in changed:
        stat = _stat(local[relative])
        upload_file(local[relative], self._url_of(relative))
        self._copied[relative] = stat
      if gone:
        FileSystems.delete([self._url_of(relative) for relative in gone])
        for relative in gone:
          del self._copied[relative]
    except Exception as e:  # each filesystem raises its own errors
      first_line = (str(e).splitlines() or [""])[0][:200]
      self.progress(f"warning: could not copy the run's state to {self.url} "
                    f"({type(e).__name__}: {first_line}); "
                    "training goes on and the next checkpoint tries again")
      return
    size = sum(local[relative].stat().st_size for relative in changed)
    self.progress(f"state copied to {self.url}: {len(changed)} files, "
                  f"{size / 2**20:,.0f} MiB in {time.monotonic() - started:.1f} s"
                  + (f", {len(gone)} removed" if gone else ""))

  def clear(self) -> None:
    """Deletes the checkpoint folders' copies at the URL once the finished
    run is there: what stays is its result (and its state file). A failure
    leaves them, with a warning."""
    try:
      remote = [relative for relative in self._remote_files()
                if relative != self.state_file]
      if remote:
        FileSystems.delete([self._url_of(relative) for relative in remote])
    except Exception as e:  # each filesystem raises its own errors
      self.progress(f"warning: the run's checkpoints stay in {self.url} "
                    f"({type(e).__name__}); delete them by hand")
    self._copied.clear()
