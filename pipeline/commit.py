"""Committing the output: staged shards, then a commit that makes them visible.

Writers stage shards under a hidden per-run folder beside the output, and
`Commit` moves them into place and writes `PREFIX-manifest.json` last, so a
run that fails or is killed leaves no set of shards that looks complete,
and a rerun replaces the output whole.
"""
import dataclasses
import datetime
import io
import logging
from typing import List, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from runtime.filesystems import (is_remote, join_path, split_path,
                                  write_atomically)
from schemas import columns as c
from schemas import outputs
from schemas.manifest import Counts, RunManifest
from schemas.outputs import SHARD_TEMPLATE


@dataclasses.dataclass(frozen=True)
class OutputPaths:
  """Where a run writes: final names, and the hidden staging folder."""
  prefix: str
  run_id: str

  @property
  def _folder(self) -> str:
    return split_path(self.prefix)[0] or "."

  @property
  def staging_dir(self) -> str:
    return join_path(self._folder,
                     f".{split_path(self.prefix)[1]}.staging-{self.run_id}")

  @property
  def staged_scores(self) -> str:
    return join_path(self.staging_dir, split_path(self.prefix)[1])

  # Dead letters live in a folder, PREFIX-errors/part-SSSSS-of-NNNNN.parquet,
  # so that analytics' `read_parquet('PREFIX-*.parquet')` matches the score
  # shards only (a glob's * does not cross a path separator).
  @property
  def errors_dir(self) -> str:
    return outputs.errors_dir(self.prefix)

  @property
  def staged_errors(self) -> str:
    return join_path(self.staging_dir, "errors", outputs.ERRORS_PART)

  @property
  def manifest(self) -> str:
    return outputs.manifest_path(self.prefix)

  def final_name(self, staged_path: str) -> str:
    folder, name = split_path(staged_path)
    if folder == split_path(self.staged_errors)[0]:
      return join_path(self.errors_dir, name)
    return join_path(self._folder, name)

  def final_globs(self) -> List[str]:
    return [outputs.score_shards_glob(self.prefix),
            join_path(self.errors_dir, outputs.ERRORS_PART) + outputs.SHARD_GLOB]


# Beam's Parquet sink holds a row group's rows in memory until they reach
# its buffer size, by default far more than a scored row group needs: a
# sawtooth in every writer's memory. This keeps it small while row groups
# stay as large as DuckDB or Spark read well (docs/scale.md).
ROW_GROUP_BUFFER_BYTES = 8 << 20


def write_shards(pcoll, prefix: str, schema: pa.Schema, num_shards: int,
                 label: str):
  """Parquet shards PREFIX-SSSSS-of-NNNNN.parquet; returns their names."""
  return pcoll | label >> beam.io.WriteToParquet(
      prefix, schema, file_name_suffix=outputs.PARQUET_SUFFIX, num_shards=num_shards,
      shard_name_template=SHARD_TEMPLATE, codec="snappy",
      row_group_buffer_size=ROW_GROUP_BUFFER_BYTES)


def _delete(paths: Sequence[str]) -> None:
  existing = [p for p in paths if FileSystems.exists(p)]
  if existing:
    FileSystems.delete(existing)


class Commit(beam.DoFn):
  """Moves the staged shards into place and writes the manifest last.

  Runs once, after both writes have finished (their file names are side
  inputs). Refuses to commit when the counts do not reconcile, so a run that
  lost records never produces complete-looking output. Idempotent: a retried
  commit finds its shards already moved.
  """

  def __init__(self, paths: OutputPaths, manifest: RunManifest, *,
               increment=None):
    """`increment` (pipeline.incremental.Increment): a rerun's earlier
    shards, from which the rows of changed and vanished files are removed
    before this run's shards are moved in and the manifest vouches for the
    union."""
    self._paths = paths
    self._manifest = manifest
    self._increment = increment

  def process(self, _, score_files, error_files, read, scored, dead, reasons,
              precisions):
    paths = self._paths
    if read != scored + dead:
      raise RuntimeError(
          f"counts do not reconcile: read {read} != scored {scored} + "
          f"dead-lettered {dead}; nothing committed (staged in "
          f"{paths.staging_dir})")
    staged = sorted(score_files) + sorted(error_files)
    finals = [paths.final_name(p) for p in staged]
    # An older manifest must not vouch for a mix of old and new shards.
    _delete([paths.manifest])
    earlier = self._increment
    replaced = 0
    if earlier is not None:
      # Before this run's shards appear: cut here, the union lacks the
      # replaced files' rows (the same rerun, run again, finds them still
      # changed) rather than holding them twice.
      replaced = drop_rows_of(earlier.earlier_scores + earlier.earlier_errors,
                              earlier.replaced)
    stale = []
    for pattern in paths.final_globs():
      stale += [m.path for m in FileSystems.match([pattern])[0].metadata_list
                if m.path not in finals]
    _delete(stale)
    moves = [(s, f) for s, f in zip(staged, finals, strict=True)
             if FileSystems.exists(s)]
    if error_files and not FileSystems.exists(paths.errors_dir):
      FileSystems.mkdirs(paths.errors_dir)
    if moves:
      FileSystems.rename([s for s, _ in moves], [f for _, f in moves])
    manifest = self._manifest.committed(
        completed_at=datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        counts=Counts(read=read, scored=scored, dead_lettered=dead,
                      dead_lettered_by_reason=dict(sorted(reasons.items()))),
        scores=[paths.final_name(p) for p in sorted(score_files)],
        errors=[paths.final_name(p) for p in sorted(error_files)],
        # (precision, why) of each worker: which it used, and why it chose it.
        precisions_used=sorted({p for p, _ in precisions}),
        precision_reasons=sorted(
            f"{p}: {why}" for p, why in set(map(tuple, precisions))),
        earlier_scores=earlier.earlier_scores if earlier else [],
        earlier_errors=earlier.earlier_errors if earlier else [],
        earlier_rows_replaced=replaced)
    write_atomically(paths.manifest, manifest.to_json().encode())
    try:
      staging = paths.staging_dir
      _delete([staging + "/" if is_remote(staging) else staging])
    except Exception as e:  # leftovers are hidden and harmless
      logging.warning("could not remove %s: %s", paths.staging_dir, e)
    yield manifest.run_id


def drop_rows_of(shards: List[str], sources: List[str]) -> int:
  """Removes the rows whose source_file is in `sources` from each earlier
  shard (rewritten atomically); returns how many rows went."""
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
