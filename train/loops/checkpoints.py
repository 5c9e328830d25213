"""What the training loops share about stopping and going on: a run's
checkpoints and its state file in one folder, and the check that a resumed
run is the same run (its settings, data and encoder)."""
import json
import pathlib
from typing import Any, Callable, Dict, Iterable, Optional

import tensorflow as tf

from train.export.serving import write_json


class ResumeMismatch(Exception):
  """--resume on a folder that holds another run."""


class RunCheckpoints:
  """The latest checkpoints (two kept) of `checkpoint` under
  WORKDIR/`folder`, and beside them the state file: the run's settings, its
  identity (data, encoder) and whatever state the loop keeps."""

  def __init__(self, checkpoint: tf.train.Checkpoint, workdir, *,
               folder: str, state_file: str, settings, identity: dict,
               what: str, inputs: str,
               changeable_on_resume: Iterable[str] = (),
               defaults_before_they_existed: Optional[Dict[str, Any]] = None,
               on_saved: Optional[Callable[[], None]] = None):
    """`what` and `inputs` name the run and what it reads in messages ("a
    run" on "data"); `on_saved` runs after each checkpoint and its state
    are written (a mirror that keeps them where a lost machine cannot take
    them along)."""
    self.checkpoint = checkpoint
    self.workdir = pathlib.Path(workdir)
    self.state_path = self.workdir / state_file
    self.manager = tf.train.CheckpointManager(
        checkpoint, str(self.workdir / folder), max_to_keep=2)
    self.settings = settings
    self.identity = identity
    self.what = what
    self.inputs = inputs
    self.changeable = set(changeable_on_resume)
    self.defaults_before = dict(defaults_before_they_existed or {})
    self.on_saved = on_saved or (lambda: None)

  @property
  def latest(self) -> Optional[str]:
    return self.manager.latest_checkpoint

  def save(self, step: int, state: Dict[str, Any]) -> None:
    """A checkpoint at `step`, then the state that goes with it."""
    self.manager.save(checkpoint_number=step)
    self.save_state(state)
    self.on_saved()

  def save_state(self, state: Dict[str, Any]) -> None:
    write_json(self.state_path, {"settings": self.settings.to_dict(),
                                 "identity": self.identity, **state})

  def restore(self, state_keys: Iterable[str]) -> Optional[Dict[str, Any]]:
    """The saved state (its `state_keys`) after loading the latest
    checkpoint into the objects; None when there is none to resume.
    ResumeMismatch when the folder holds a run with other settings (but
    those changeable on resume), data or encoder."""
    if not self.state_path.exists() or not self.latest:
      return None
    saved = json.loads(self.state_path.read_text())
    ran_with = {**self.defaults_before, **saved["settings"]}
    now = self.settings.to_dict()
    changed = sorted(k for k, v in ran_with.items()
                     if now.get(k, v) != v and k not in self.changeable)
    if changed:
      raise ResumeMismatch(
          f"{self.workdir} holds {self.what} with other settings "
          f"({', '.join(changed)}); resume with the same options or choose "
          "another --out")
    if saved["identity"] != self.identity:
      raise ResumeMismatch(f"{self.workdir} holds {self.what} on other "
                           f"{self.inputs} or another encoder")
    self.checkpoint.restore(self.latest).assert_existing_objects_matched()
    return {k: saved[k] for k in state_keys}
