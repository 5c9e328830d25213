"""Reruns that score only what is new (`--since PREFIX`).

An archive that grows is scored in full once; each later run names the
latest earlier output and scores only the input files that are new or
changed since (a file's size or modification time differs from the state
the earlier runs recorded), for the same model. Its shards go to its own
--output prefix beside the earlier ones; the rows the earlier runs wrote
for files that have since changed are removed from their shards (each such
shard is rewritten whole, then renamed over the old), so the union of all
the runs' shards holds every current review once. Each manifest records
the file states it covers and the runs it extends, so the next rerun needs
only the latest manifest.
"""
import dataclasses
import io
import json
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.plan import InputError, InputPlan
from runtime.filesystems import write_atomically
from schemas import columns as c
from schemas import outputs


@dataclasses.dataclass
class Increment:
  """What a rerun scores, and what it owes the earlier runs."""
  since: str
  extends: List[str]  # every earlier output prefix, oldest first
  covered: Dict[str, Dict[str, Any]]  # file states after this run
  to_score: List[str]  # paths new or changed since
  changed: List[str]  # of those, the ones an earlier run scored
  unchanged: int
  vanished: List[str]  # scored earlier, no longer matched (rows kept)
  earlier_scores: List[str]
  earlier_errors: List[str]

  def describe(self) -> str:
    new = len(self.to_score) - len(self.changed)
    text = (f"since {self.since}: {new} new, {len(self.changed)} changed and "
            f"{self.unchanged} unchanged file(s)")
    if self.vanished:
      text += (f"; {len(self.vanished)} file(s) scored earlier are no longer "
               "in the input (their rows stay)")
    return text

  def record(self) -> dict:
    return {"since": self.since, "new_files": len(self.to_score) - len(self.changed),
            "changed_files": len(self.changed), "unchanged_files": self.unchanged,
            "vanished_files": len(self.vanished)}


def read_earlier_manifest(prefix: str) -> dict:
  path = outputs.manifest_path(prefix)
  if not FileSystems.exists(path):
    raise InputError(f"--since {prefix}: no complete scored output there "
                     f"({path} is missing)")
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    return json.loads(f.read().decode())


def plan_increment(plan: InputPlan, since: str, *, fingerprint: str
                   ) -> Optional[Increment]:
  """The rerun's share of `plan`; None when the earlier run used another
  model (a different model means scoring everything)."""
  earlier = read_earlier_manifest(since)
  if earlier.get("model", {}).get("fingerprint") != fingerprint:
    return None
  if earlier.get("input") != plan.pattern:
    raise InputError(f"--since {since}: that run read {earlier.get('input')!r}, "
                     f"this one reads {plan.pattern!r}; a rerun reads the same "
                     "input pattern")
  before = earlier.get("input_files")
  if before is None:
    raise InputError(f"--since {since}: its manifest does not record its "
                     "input files (written by an older version); score in "
                     "full once")
  states = plan.file_states()
  to_score = [path for path, state in states.items() if before.get(path) != state]
  return Increment(
      since=since,
      extends=list(earlier.get("extends", [])) + [since],
      covered={**before, **{path: states[path] for path in to_score}},
      to_score=to_score,
      changed=[path for path in to_score if path in before],
      unchanged=len(states) - len(to_score),
      vanished=sorted(set(before) - set(states)),
      earlier_scores=list(earlier.get("all_scores", earlier.get("scores", []))),
      earlier_errors=list(earlier.get("all_errors", earlier.get("errors", []))))


def drop_rows_of(shards: List[str], sources: List[str]) -> int:
  """Removes the rows whose source_file is in `sources` from each shard
  (rewritten atomically); returns how many rows went."""
  if not sources:
    return 0
  gone = pa.array(sorted(set(sources)), pa.string())
  dropped = 0
  for shard in shards:
    with FileSystems.open(shard,
                          compression_type=CompressionTypes.UNCOMPRESSED) as f:
      table = pq.read_table(io.BytesIO(f.read()))
    stale = pc.is_in(table[c.SOURCE_FILE], value_set=gone)
    count = pc.sum(stale).as_py() or 0
    if not count:
      continue
    kept = table.filter(pc.invert(stale))
    sink = pa.BufferOutputStream()
    pq.write_table(kept, sink, compression="snappy")
    write_atomically(shard, sink.getvalue().to_pybytes())
    dropped += count
  return dropped
