"""Reruns that score only what is new (`--since PREFIX`).

An archive that grows is scored in full once; each later run names the
latest earlier output and scores only the input files that are new or
changed since (a file's size or modification time differs from the state
the earlier runs recorded), for the same model, read the same way. Its
shards go to its own --output prefix beside the earlier ones; the rows the
earlier runs wrote for files that have since changed or left the input are
removed from their shards (each such shard is rewritten whole, then renamed
over the old), so the union of all the runs' shards holds every current
review once: what one full run over today's input would hold. Each
manifest records the file states it covers, how it read them and the runs
it extends, so the next rerun needs only the latest manifest.
"""
import dataclasses
from typing import Dict, List, Optional

from apache_beam.io.filesystems import FileSystems

from pipeline.plan import InputError, InputPlan
from pipeline.settings import OptionsError
from runtime.filesystems import join_path, same_prefix, split_path
from schemas import outputs
from schemas.manifest import (FileState, IncrementRecord, ManifestError,
                              ModelUsed, Reading, RunManifest, read_manifest,
                              read_manifest_file)


@dataclasses.dataclass
class Increment:
  """What a rerun scores, and what it owes the earlier runs."""
  since: str
  extends: List[str]  # every earlier output prefix, oldest first
  covered: Dict[str, FileState]  # file states after this run
  to_score: List[str]  # paths new or changed since
  changed: List[str]  # of those, the ones an earlier run scored
  unchanged: int
  vanished: List[str]  # scored earlier, no longer matched (rows removed)
  earlier_scores: List[str]
  earlier_errors: List[str]

  @property
  def replaced(self) -> List[str]:
    """The files whose earlier rows leave the union."""
    return self.changed + self.vanished

  def describe(self) -> str:
    new = len(self.to_score) - len(self.changed)
    text = (f"since {self.since}: {new} new, {len(self.changed)} changed and "
            f"{self.unchanged} unchanged file(s)")
    if self.vanished:
      text += (f"; {len(self.vanished)} file(s) scored earlier are no longer "
               "in the input (their rows leave the union)")
    return text

  def record(self) -> IncrementRecord:
    return IncrementRecord(
        since=self.since, new_files=len(self.to_score) - len(self.changed),
        changed_files=len(self.changed), unchanged_files=self.unchanged,
        vanished_files=len(self.vanished))


def read_earlier_manifest(prefix: str) -> RunManifest:
  try:
    return read_manifest(prefix)
  except ManifestError as e:
    raise InputError(f"--since {e}") from None


def another_model(earlier: RunManifest, model: ModelUsed) -> Optional[str]:
  """Why the earlier runs' scores cannot stand beside this run's (None when
  they can): another model fingerprint, or the same weights served with
  another decision threshold or tokenization, which change labels and
  scores as much. `model` is this run's."""
  return model.differs_from(earlier.model)


def plan_increment(plan: InputPlan, since: str, earlier: RunManifest, *,
                   output: str, reading: Reading) -> Increment:
  """The rerun's share of `plan`, given the earlier run's manifest (for the
  same model: `another_model` found none). `reading`: how this run reads
  its input, which must be how the earlier runs did.
  Raises OptionsError or InputError when the rerun cannot extend them."""
  chain = list(earlier.extends) + [since]
  for prefix in chain:
    if same_prefix(output, prefix):
      raise OptionsError(
          f"--output {output} is one of the runs this one extends: give this "
          "run a new --output prefix beside them")
  if earlier.input != plan.pattern:
    raise InputError(f"--since {since}: that run read {earlier.input!r}, "
                     f"this one reads {plan.pattern!r}; a rerun reads the same "
                     "input pattern")
  _check_same_reading(since, earlier.reading, reading)
  before = earlier.input_files
  if before is None:
    raise InputError(f"--since {since}: its manifest does not record its "
                     "input files (written by an older version); score in "
                     "full once")
  _check_latest(since, output)
  earlier_scores = earlier.union_scores
  earlier_errors = earlier.union_errors
  _check_shards_exist(since, earlier_scores + earlier_errors)
  states = plan.file_states()
  to_score = [path for path, state in states.items() if before.get(path) != state]
  vanished = sorted(set(before) - set(states))
  return Increment(
      since=since,
      extends=chain,
      covered={**{path: before[path] for path in before if path in states},
               **{path: states[path] for path in to_score}},
      to_score=to_score,
      changed=[path for path in to_score if path in before],
      unchanged=len(states) - len(to_score),
      vanished=vanished,
      earlier_scores=earlier_scores,
      earlier_errors=earlier_errors)


def _check_same_reading(since: str, earlier: Reading, reading: Reading
                        ) -> None:
  """The union is one table: its columns, ids and limits are the earlier
  runs'. Manifests of older versions record only the text and id columns."""
  differ = reading.differences(earlier)
  if differ:
    raise InputError(
        f"--since {since}: that run read its input otherwise ({'; '.join(differ)}); "
        "a rerun reads it as the runs it extends did, or scores in full into "
        "a folder of its own")


def _check_latest(since: str, output: str) -> None:
  """Refuses to extend a run that a later rerun already extends: the files
  that one scored would be scored again, and show twice in the union."""
  since_manifest = outputs.manifest_path(since)
  folder = split_path(since)[0] or "."
  pattern = join_path(folder, "*" + outputs.MANIFEST_SUFFIX)
  found = FileSystems.match([since_manifest, pattern])
  listed = found[0].metadata_list
  written_at = listed[0].last_updated_in_seconds if listed else 0
  for entry in found[1].metadata_list:
    path = entry.path
    if same_prefix(path, since_manifest) or same_prefix(
        path, outputs.manifest_path(output)):
      continue
    if written_at and entry.last_updated_in_seconds and \
        entry.last_updated_in_seconds < written_at:
      continue  # written before the earlier run finished: cannot extend it
    try:
      other = read_manifest_file(path)
    except ManifestError:
      continue  # not ours to judge
    if any(same_prefix(since, p) for p in other.extends):
      later = path[:-len(outputs.MANIFEST_SUFFIX)]
      raise InputError(f"--since {since}: {later} already extends it; a rerun "
                       f"names the latest run (--since {later})")


def _check_shards_exist(since: str, shards: List[str]) -> None:
  if not shards:
    return
  missing = [shard for shard, result in zip(
      shards, FileSystems.match(shards), strict=True)
             if not result.metadata_list]
  if missing:
    raise InputError(f"--since {since}: {len(missing)} shard(s) of the runs it "
                     f"extends are gone (first {missing[0]}), so their union "
                     "is incomplete; score in full into a folder of its own")
