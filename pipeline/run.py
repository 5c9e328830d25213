"""Launching a scoring run: options → model card → input plan → rerun
increment → the pipeline (`pipeline.graph`) on its runner → the result.

    python -m pipeline.run --input 'reviews/*.parquet' --model models/m1 \\
        --output scores/run1 [--runner DirectRunner ...]

Arguments the pipeline does not know go to Beam's PipelineOptions.
`run(argv)` is what the CLI and the tests call; it checks the model and the
input before anything starts, waits for the pipeline, and returns its counts.
"""
import dataclasses
import logging
import os
import sys
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import apache_beam as beam
from apache_beam.runners.runner import PipelineState

from engines.model_dir import (ModelError, copy_problems, load_model_card,
                               saved_model_path)
from pipeline.commit import OutputPaths
from pipeline.graph import build_pipeline
from pipeline.progress import Expected, progress_log
from pipeline.incremental import (Increment, another_model, plan_increment,
                                  read_earlier_manifest)
from pipeline.model_handler import TokenIdsModelHandler
from pipeline.option_checks import (check_against_model, parse_options,
                                    runs_on_direct_runner)
from pipeline.options import ScoreOptions
from pipeline.plan import InputError, InputPlan, plan_input
from pipeline.scoring_model import worker_log
from schemas.model_dir import TOKENIZER
from pipeline.settings import OptionsError, parse_names
from runtime import quiet
from schemas.manifest import (Counts, ManifestError, ModelUsed, Precision,
                              Reading, RunManifest, read_manifest)


class PipelineFailed(Exception):
  """The pipeline ran but did not finish; nothing was committed."""


# The errors that mean bad input or options rather than a bug: one line each.
SCORING_ERRORS = (InputError, ModelError, OptionsError, PipelineFailed)


@dataclasses.dataclass
class ScoreResult:
  output_prefix: str
  manifest_path: str
  score_files: List[str]
  error_files: List[str]
  counts: Dict[str, Any]
  metrics: Dict[str, int]
  elapsed_secs: float
  state: str

  def summary(self) -> str:
    counts = Counts(**self.counts)
    reasons = ", ".join(f"{k} {v:,}" for k, v in
                        counts.dead_lettered_by_reason.items()) or "none"
    return (f"read {counts.read:,} = scored {counts.scored:,} + "
            f"dead-lettered {counts.dead_lettered:,} ({reasons}) in "
            f"{self.elapsed_secs:.1f}s\n"
            f"scores: {', '.join(self.score_files)}\n"
            f"dead letters: {', '.join(self.error_files)}\n"
            f"manifest: {self.manifest_path}")


def _show_worker_lines() -> None:
  """Workers' progress and precision choice on the launcher's stderr (they
  share it on DirectRunner; elsewhere they go to the workers' logs)."""
  for logger, prefix in ((progress_log, "progress"), (worker_log, "worker")):
    if not logger.handlers:
      handler = logging.StreamHandler(sys.stderr)
      handler.setFormatter(logging.Formatter(prefix + ": %(message)s"))
      logger.addHandler(handler)
      logger.setLevel(logging.INFO)
      logger.propagate = False


@dataclasses.dataclass
class PlannedRun:
  """A checked, built pipeline that has not run yet."""
  pipeline: beam.Pipeline
  paths: OutputPaths  # the output prefix and this run's id


def _refuse_damaged_copies(model_dir: str, card, checked) -> None:
  """A copy the workers may compute with must be as it was made: missing
  or altered, it stops the job here, never scores another way. Copies of
  precisions the job cannot use (`--precision float32` and the int8 copy)
  are not its business."""
  problems = copy_problems(model_dir, card)
  used = [line for name, line in problems.items()
          if name in checked.copies or (name == TOKENIZER and checked.tokenizer)]
  if used:
    raise ModelError("; ".join(used) + " (refusing to score with it)")


def plan_run(argv: Optional[List[str]] = None, save_main_session: bool = True,
             *, echo: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
             **values) -> PlannedRun:
  """Checks the options, the model and the input, and builds the pipeline;
  raises one of SCORING_ERRORS on bad input. Nothing is written.

  Options come as Beam's argv (`--input=... --runner=...`, sys.argv when
  None), as Python values (`input=..., max_batch_size=64`; these win), or
  both; anything in argv that is neither ours nor Beam's is an error.
  """
  options = parse_options(argv, values, save_main_session=save_main_session)
  opts = options.view_as(ScoreOptions)
  # Model first, then the input: both before any record is read.
  card = load_model_card(opts.model, check_copies=False)
  checked = check_against_model(opts, card, options=options,
                                model_dir=opts.model)
  _refuse_damaged_copies(opts.model, card, checked)
  plan = plan_input(opts.input, format=opts.format,
                    text_column=opts.text_column, id_column=opts.id_column,
                    positional_ids=opts.positional_ids,
                    carry=parse_names(opts.carry_columns),
                    max_review_bytes=opts.max_review_bytes)
  _show_worker_lines()
  echo(f"scoring {plan.describe()} with {card.model_name} "
       f"(precision {opts.precision}, fingerprint "
       f"{card.model_fingerprint[:12]})")
  model = ModelUsed(dir=opts.model, name=card.model_name,
                    fingerprint=card.model_fingerprint,
                    precision=Precision(requested=opts.precision),
                    threshold=card.threshold,
                    tokenization=card.truncation or {
                        "seq_length": card.seq_length})
  reading = Reading(format=plan.format, text_column=opts.text_column,
                    id_column=opts.id_column,
                    carried=[list(pair) for pair in plan.carried],
                    positional_ids=bool(opts.positional_ids),
                    max_review_bytes=opts.max_review_bytes)
  increment = _increment(opts, plan, model, reading, echo=echo)
  if increment:
    plan = plan.restricted_to(increment.to_score)
  run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
  paths = OutputPaths(opts.output, run_id)
  manifest = RunManifest(
      run_id=run_id, input=opts.input, reading=reading, model=model,
      batching={"min_batch_size": checked.min_batch_size,
                "max_batch_size": opts.max_batch_size,
                "sort_wave_size": checked.sort_wave_size,
                "length_bucketing": opts.length_bucketing,
                "bucket_boundaries": checked.bucket_boundaries,
                "max_batch_duration_secs": checked.max_batch_duration_secs},
      input_files=increment.covered if increment else plan.file_states(),
      extends=increment.extends if increment else [],
      increment=increment.record() if increment else None)
  handler = TokenIdsModelHandler(
      saved_model_path(opts.model), signatures=checked.signatures,
      model_fingerprint=card.model_fingerprint, precision=opts.precision,
      min_batch_size=checked.min_batch_size,
      max_batch_size=opts.max_batch_size,
      max_batch_duration_secs=checked.max_batch_duration_secs,
      length_bucketing=opts.length_bucketing,
      bucket_boundaries=checked.bucket_boundaries,
      max_attempts=opts.inference_attempts,
      copies=checked.copies, tokenizer=checked.tokenizer)
  try:
    p = beam.Pipeline(runner=checked.runner, options=options)
  except (ValueError, ImportError, AttributeError) as e:  # an unknown --runner
    raise OptionsError(f"--runner: {_first_line(e)}") from None
  expected = Expected(run_id=run_id, reviews=plan.expected_reviews(),
                      input_bytes=plan.uncompressed_bytes(),
                      workers=_worker_processes(options))
  build_pipeline(p, plan=plan, card=card, handler=handler, paths=paths,
                 opts=opts, manifest=manifest, expected=expected,
                 sort_wave_size=checked.sort_wave_size, increment=increment)
  return PlannedRun(pipeline=p, paths=paths)


def _worker_processes(options) -> Optional[int]:
  """How many worker processes share the input (None: the runner decides)."""
  from apache_beam.options.pipeline_options import DirectOptions
  if not runs_on_direct_runner(options):
    return None
  direct = options.view_as(DirectOptions)
  if direct.direct_running_mode != "multi_processing":
    return 1
  return direct.direct_num_workers or os.cpu_count() or 1


def _increment(opts: ScoreOptions, plan: InputPlan, model: ModelUsed,
               reading: Reading, *, echo) -> Optional[Increment]:
  """A rerun's share of the input (--since), or None: score everything."""
  if not opts.since:
    return None
  earlier = read_earlier_manifest(opts.since)
  full_run_because = another_model(earlier, model)
  if full_run_because:
    echo(f"--since {opts.since}: {full_run_because}; scoring everything")
    return None
  increment = plan_increment(plan, opts.since, earlier, output=opts.output,
                             reading=reading)
  echo(increment.describe())
  return increment


def run(argv: Optional[List[str]] = None, save_main_session: bool = True, *,
        echo: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
        **values) -> ScoreResult:
  """Checks, runs and waits (`plan_run`'s arguments); raises one of
  SCORING_ERRORS on bad input or a failed pipeline."""
  start = time.time()
  planned = plan_run(argv, save_main_session, echo=echo, **values)
  paths = planned.paths
  try:
    result = planned.pipeline.run()
    state = result.wait_until_finish()
  except Exception as e:
    raise PipelineFailed(f"the pipeline failed, nothing was committed "
                         f"(partial work is in {paths.staging_dir}; "
                         "REVIEWSCORE_VERBOSE=1 or 'reviewscore --verbose "
                         "score ...' shows Beam's log): "
                         f"{type(e).__name__}: {_first_line(e)}") from e
  if state != PipelineState.DONE:
    raise PipelineFailed(f"the pipeline ended {state}; nothing was committed")
  try:
    written = read_manifest(paths.prefix)
  except ManifestError:
    written = None
  if written is None or written.run_id != paths.run_id:
    raise PipelineFailed(f"the pipeline finished but {paths.manifest} was not "
                         "written by this run")
  metrics = _metric_counts(result)
  counts = dataclasses.asdict(written.counts)
  if metrics.get("read") is not None and metrics["read"] != counts["read"]:
    logging.warning("metrics say %s read, the manifest %s", metrics["read"],
                    counts["read"])
  score = ScoreResult(
      output_prefix=paths.prefix, manifest_path=paths.manifest,
      score_files=written.scores, error_files=written.errors,
      counts=counts, metrics=metrics, elapsed_secs=time.time() - start,
      state=str(state))
  echo(score.summary())
  return score


def _first_line(error: Exception) -> str:
  lines = [line for line in str(error).splitlines() if line.strip()]
  # Beam wraps worker errors in long tracebacks; the last line says what.
  return lines[-1][:500] if lines else type(error).__name__


def _metric_counts(result) -> Dict[str, int]:
  """Beam counters of namespace 'reviewscore' (committed, else attempted)."""
  counts = {}
  try:
    query = result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace("reviewscore"))
  except Exception as e:  # some runners report no metrics
    logging.info("no metrics from the runner: %s", e)
    return counts
  for counter in query.get("counters", []):
    value = counter.committed if counter.committed is not None \
        else counter.attempted
    name = counter.key.metric.name
    counts[name] = counts.get(name, 0) + int(value or 0)
  for dist in query.get("distributions", []):
    value = dist.committed if dist.committed is not None else dist.attempted
    if value is not None and value.count:
      name = dist.key.metric.name
      counts[name + ".mean"] = round(value.sum / value.count, 2)
      counts[name + ".max"] = value.max
  return counts


def main(argv=None) -> int:
  quiet.quiet_process()
  try:
    run(argv)
  except OptionsError as e:  # a bad option, ours or Beam's: as click's usage errors
    print(f"error: {e}", file=sys.stderr)
    return 2
  except SCORING_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
