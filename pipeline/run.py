"""The scoring pipeline: reviews → validate → tokenize → RunInference → Parquet.

    python -m pipeline.run --input 'reviews/*.parquet' --model models/m1 \\
        --output scores/run1 [--runner DirectRunner ...]

Arguments the pipeline does not know go to Beam's PipelineOptions.
`run(argv)` is what the CLI and the tests call; it checks the model and the
input before anything starts, waits for the pipeline, and returns its counts.
"""
import dataclasses
import logging
import sys
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import (DirectOptions,
                                                  PipelineOptions, SetupOptions,
                                                  StandardOptions, WorkerOptions)
from apache_beam.runners.runner import PipelineState

from pipeline.commit import Commit, OutputPaths, read_manifest, write_shards
from pipeline.incremental import (another_model, plan_increment,
                                  read_earlier_manifest, same_prefix)
from pipeline.length_sort import SortByLengthInWaves
from pipeline.dead_letters import (DEAD, FormatDeadLetter, dead_letter,
                                   error_detail)
from runtime.filesystems import missing_filesystem
from runtime import quiet
from pipeline.model_card import (ModelError, int8_copy_path, load_model_card,
                                 saved_model_path)
from pipeline.model_handler import TokenIdsModelHandler
from pipeline.scoring_model import worker_log
from pipeline.options import BadOptionValue, ScoreOptions, unknown_flags
from pipeline.plan import InputError, InputPlan, plan_input
from pipeline.read import ReadReviews, Validate
from pipeline.settings import (DEFAULTS, OptionsError, check_values,
                               default_bucket_boundaries, parse_int_list,
                               parse_names)
from pipeline.tokenize import TokenizeBatch
from schemas import arrow as schema_lib
from schemas import columns as c
from schemas import model_dir as contract
from schemas.model_dir import INT8, ModelCard, ModelCardError


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
    counts = self.counts
    reasons = ", ".join(f"{k} {v:,}" for k, v in
                        counts["dead_lettered_by_reason"].items()) or "none"
    return (f"read {counts['read']:,} = scored {counts['scored']:,} + "
            f"dead-lettered {counts['dead_lettered']:,} ({reasons}) in "
            f"{self.elapsed_secs:.1f}s\n"
            f"scores: {', '.join(self.score_files)}\n"
            f"dead letters: {', '.join(self.error_files)}\n"
            f"manifest: {self.manifest_path}")


def _format_score(result, *, class_names, fingerprint, carried):
  """PredictionResult → one row of schemas.scored_schema()."""
  record, inference = result.example, result.inference
  label_id = int(inference[contract.OUTPUT_LABEL_ID])
  row = {c.REVIEW_ID: record["id"], c.SCORE: inference[contract.OUTPUT_PROBABILITY],
         c.LABEL_NAME: class_names[label_id], c.LABEL_ID: label_id,
         c.MODEL_FINGERPRINT: fingerprint, c.SOURCE_FILE: record["source"]}
  if contract.OUTPUT_PROBABILITIES in inference:
    row[c.CLASS_SCORES] = inference[contract.OUTPUT_PROBABILITIES]
  for name in carried:
    row[name] = record["carried"].get(name)
  return row


def _failed_batch_letters(failure):
  """RunInference's (batch, exception) dead letters → one per review."""
  batch, error = failure
  detail = error_detail(error)
  for record in batch:
    yield dead_letter(record, c.REASON_INFERENCE_FAILED, detail)


PROGRESS_EVERY_SECS = 15.0
progress_log = logging.getLogger("reviewscore.progress")


class _QuietBucketKeyWarning(logging.Filter):
  """Drops Beam's warning that the bucketed batching key may not be
  deterministic: Beam's own WithLengthBucketKey keys by (worker uuid str,
  bucket int), which FastPrimitivesCoder encodes deterministically; the
  warning only means the key has no type hint, and it would greet every run.
  """

  def filter(self, record):
    message = record.getMessage()
    return not (message.startswith("Key coder")
                and "_StatefulBatchElementsDoFn" in message)


logging.getLogger("apache_beam.transforms.core").addFilter(
    _QuietBucketKeyWarning())


class _CountScored(beam.DoFn):
  """Counts scored rows; logs this worker's first scored review (the sign
  that the whole path works) and its progress every few seconds.

  DirectRunner blocks the launcher until the end, so progress comes from the
  workers themselves (on Dataflow it lands in the worker logs).
  """

  def setup(self):
    self._scored = beam.metrics.Metrics.counter("reviewscore", "scored")
    self._count, self._start = 0, time.monotonic()
    self._last_log = self._start

  def process(self, row):
    self._scored.inc()
    self._count += 1
    now = time.monotonic()
    if self._count == 1:
      progress_log.info("first review scored by this worker (%.1f s after it "
                        "set up)", now - self._start)
    elif now - self._last_log >= PROGRESS_EVERY_SECS:
      self._last_log = now
      progress_log.info("%s reviews scored by this worker (%.1f/s)",
                        f"{self._count:,}", self._count / (now - self._start))
    yield row


def build_pipeline(p: beam.Pipeline, *, plan: InputPlan,
                   card: ModelCard, handler: TokenIdsModelHandler,
                   paths: OutputPaths, opts: ScoreOptions,
                   manifest: Dict[str, Any], sort_wave_size: int = 0,
                   increment=None) -> None:
  """Adds the scoring steps to `p` (labelled, so runners' UIs read well)."""
  max_bytes = opts.max_review_bytes
  raw = p | "Read" >> ReadReviews(plan, max_bytes=max_bytes)
  valid = raw | "Validate" >> beam.ParDo(Validate(
      max_bytes=max_bytes)).with_outputs(DEAD, main="valid")
  tokenized = (
      valid.valid
      # Tokenizing a batch at a time amortises the TensorFlow call.
      | "BatchForTokenize" >> beam.BatchElements(
          min_batch_size=1, max_batch_size=opts.tokenize_batch_size)
      | "Tokenize" >> beam.ParDo(TokenizeBatch(saved_model_path(opts.model)))
      .with_outputs(DEAD, main="tokens"))
  tokens = tokenized.tokens
  if sort_wave_size:
    tokens = tokens | "SortByLength" >> beam.ParDo(SortByLengthInWaves(
        sort_wave_size, first_wave=opts.max_batch_size))
  results, failed = (tokens
                     | "RunInference" >> RunInference(handler)
                     .with_exception_handling())
  scores = (results
            | "FormatScores" >> beam.Map(
                _format_score, class_names=list(card.class_names),
                fingerprint=card.model_fingerprint,
                carried=plan.carried_names)
            | "CountScored" >> beam.ParDo(_CountScored()))
  inference_dead = (failed.failed_inferences
                    | "InferenceDeadLetters" >> beam.FlatMap(
                        _failed_batch_letters))
  dead = ((valid[DEAD], tokenized[DEAD], inference_dead)
          | "AllDeadLetters" >> beam.Flatten()
          | "FormatDeadLetters" >> beam.ParDo(FormatDeadLetter()))

  metadata = schema_lib.scored_schema_metadata(
      model_name=card.model_name, model_fingerprint=card.model_fingerprint,
      threshold=card.threshold, class_names=card.class_names)
  scored_schema = schema_lib.scored_schema(
      plan.carried_fields, metadata, class_count=len(card.class_names))
  score_files = write_shards(scores, paths.staged_scores, scored_schema,
                             opts.num_shards, "WriteScores")
  error_files = write_shards(dead, paths.staged_errors,
                             schema_lib.dead_letter_schema(), 1,
                             "WriteDeadLetters")

  # Which precision the workers chose (auto decides on each worker).
  precisions = (results
                | "Precisions" >> beam.Map(lambda r: (r.inference["precision"],
                                                      r.inference["precision_why"]))
                | "DistinctPrecisions" >> beam.Distinct())
  count = beam.combiners.Count
  n_read = raw | "CountRead" >> count.Globally()
  n_scored = scores | "CountScores" >> count.Globally()
  n_dead = dead | "CountDeadLetters" >> count.Globally()
  reasons = (dead | "Reasons" >> beam.Map(lambda row: row[c.ERROR_REASON])
             | "CountReasons" >> count.PerElement())
  side = beam.pvalue
  _ = (p
       | "CommitTrigger" >> beam.Create([None])
       | "Commit" >> beam.ParDo(
           Commit(paths, manifest, increment=increment),
           side.AsList(score_files),
           side.AsList(error_files), side.AsSingleton(n_read),
           side.AsSingleton(n_scored), side.AsSingleton(n_dead),
           side.AsDict(reasons), side.AsList(precisions)))


def _check_options(opts: ScoreOptions, card: ModelCard) -> Dict[str, Any]:
  """What the options mean for this model: bucket edges, the smallest
  batch, and the signature of each precision the workers may use."""
  if opts.text_column == opts.id_column and not opts.positional_ids:
    raise OptionsError(f"--text-column and --id-column both name "
                       f"{opts.text_column!r}: ids come from another column "
                       "(or --positional-ids)")
  min_batch_size = opts.min_batch_size
  if min_batch_size is None:  # fixed batches of --max_batch_size
    min_batch_size = opts.max_batch_size
  try:
    signatures = card.classify_signatures(opts.precision)
  except ModelCardError as e:
    # The model is fine; the option asks for what it does not carry.
    raise OptionsError(f"--precision {opts.precision}: {opts.model}: {e}"
                       ) from None
  buckets = parse_int_list(opts.bucket_boundaries)
  return {"buckets": buckets or default_bucket_boundaries(card.seq_length),
          "min_batch_size": min_batch_size, "signatures": signatures}


def _int8_copy_of(model_dir: str, card: ModelCard, signatures) -> Dict[str, Any]:
  """Where the workers find the int8 copy and what its files must hash to,
  when they may score in int8."""
  copy = card.int8_copy
  if copy is None or INT8 not in signatures:
    return {}
  return {"int8_copy_dir": int8_copy_path(model_dir),
          "int8_files_sha256": copy.files_sha256}


_DIRECT_RUNNER_NAMES = ("directrunner", "direct", "switchingdirectrunner")


def _runs_on_direct_runner(options: PipelineOptions) -> bool:
  name = options.view_as(StandardOptions).runner
  return name is None or name.lower() in _DIRECT_RUNNER_NAMES


def _batching(opts: ScoreOptions, buckets: List[int], *,
              options: PipelineOptions, direct: bool) -> Dict[str, Any]:
  """How batches form, and the runner to use (None: the one named).

  By default reviews pass through length-sorted waves into Beam's
  per-bundle BatchElements: no state, no shuffle, flat memory. With
  --length-bucketing, Beam's stateful BatchElements keyed by bucket.

  On DirectRunner the engine is always FnApiRunner, which DirectRunner
  itself picks for a plain batch pipeline but not for a stateful one: the
  processing-time timer of the stateful BatchElements sends it to the
  legacy BundleBasedDirectRunner, which drops the batches its end-of-window
  timer flushes (an input too small to fill a bucket lost every review).
  FnApiRunner flushes them, but fails if a processing-time timer is still
  pending at the end; so no buffering limit there (a batch job has all its
  input: a batch waits for its bucket to fill or the input to end).
  """
  named = (options.view_as(StandardOptions).runner or "").lower()
  if opts.length_bucketing and named.rsplit(".", 1)[-1] == "bundlebaseddirectrunner":
    raise OptionsError("--length-bucketing cannot run on BundleBasedDirectRunner "
                       "(it drops the batches its end-of-window timer flushes): "
                       "use DirectRunner, which runs it on FnApiRunner")
  runner = _fn_api_runner(options) if direct else None
  if not opts.length_bucketing:
    return {"runner": runner, "sort_wave_size": opts.sort_wave_size,
            "max_batch_duration_secs": None, "bucket_boundaries": None}
  return {"runner": runner, "sort_wave_size": 0,
          "max_batch_duration_secs": 0 if direct
          else opts.max_batch_duration_secs,
          "bucket_boundaries": buckets}


def _fn_api_runner(options: PipelineOptions):
  """FnApiRunner as DirectRunner makes it: it honours --direct_num_workers
  and --direct_running_mode, and passes the pipeline's options to the
  worker processes of multi_processing (their log level among them), which
  a bare FnApiRunner() leaves empty."""
  from apache_beam.portability.api import beam_provision_api_pb2
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  from apache_beam.runners.portability.portable_runner import JobServiceHandle
  encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
  return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
      beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


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


def plan_run(argv: Optional[List[str]] = None, save_main_session: bool = True,
             *, echo: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
             **values) -> PlannedRun:
  """Checks the options, the model and the input, and builds the pipeline;
  raises one of SCORING_ERRORS on bad input. Nothing is written.

  Options come as Beam's argv (`--input=... --runner=...`, sys.argv when
  None), as Python values (`input=..., max_batch_size=64`; these win), or
  both; anything in argv that is neither ours nor Beam's is an error.
  """
  flags = sys.argv[1:] if argv is None else list(argv)
  try:
    unknown = unknown_flags(flags)
  except BadOptionValue as e:
    raise OptionsError(str(e)) from None
  flag = next((a for a in unknown if a.startswith("-")), None)
  if flag:
    raise OptionsError(f"no such option: {flag} (neither "
                       "reviewscore's nor Beam's)")
  if unknown:
    raise OptionsError(f"unexpected argument {unknown[0]!r}: options take one "
                       "value each (quote a pattern, --input 'parts/*.parquet', "
                       "or the shell expands it into several)")
  strangers = sorted(set(values) - set(DEFAULTS))
  if strangers:
    raise TypeError(f"unknown options {strangers}")
  for name in values:  # --max-batch-size 8 --max_batch_size=64: which one?
    spelled = f"--{name}"
    if any(flag == spelled or flag.startswith(spelled + "=") for flag in flags):
      raise OptionsError(f"--{name.replace('_', '-')} is given twice (also as "
                         f"{spelled})")
  options = PipelineOptions(flags, **values)
  harness = options.view_as(WorkerOptions)
  if harness.default_sdk_harness_log_level is None and not quiet.is_verbose():
    harness.default_sdk_harness_log_level = quiet.WORKER_LOG_LEVEL
  # The launcher reads the model card and plans the input before the
  # pipeline exists: with the job's filesystem options (an S3 endpoint,
  # credentials), as Beam sets them when a pipeline is built.
  FileSystems.set_options(options)
  options.view_as(SetupOptions).save_main_session = save_main_session
  opts = options.view_as(ScoreOptions)
  check_values({name: getattr(opts, name) for name in DEFAULTS})
  # Beam takes any integer and fails on a worker later (0: one per core).
  if options.view_as(DirectOptions).direct_num_workers < 0:
    raise OptionsError("--direct_num_workers must be at least 0 (0: one "
                       "worker per core)")
  # Model first, then the input: both before any record is read.
  card = load_model_card(opts.model)
  checked = _check_options(opts, card)
  plan = plan_input(opts.input, format=opts.format,
                    text_column=opts.text_column, id_column=opts.id_column,
                    positional_ids=opts.positional_ids,
                    carry=parse_names(opts.carry_columns),
                    max_review_bytes=opts.max_review_bytes)
  _show_worker_lines()
  echo(f"scoring {plan.describe()} with {card.model_name} "
       f"(precision {opts.precision}, fingerprint "
       f"{card.model_fingerprint[:12]})")
  run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
  unreachable = missing_filesystem(opts.output)
  if unreachable:
    raise OptionsError(unreachable)
  paths = OutputPaths(opts.output, run_id)
  model = {"dir": opts.model, "name": card.model_name,
           "fingerprint": card.model_fingerprint,
           "precision": {"requested": opts.precision},
           "threshold": card.threshold,
           # Same weights, other packing: other scores (reruns compare it).
           "tokenization": card.truncation or {"seq_length": card.seq_length}}
  # How the input was read: what a rerun must repeat for its rows to be
  # the same table as the earlier runs'.
  reading = {"format": plan.format,
             "columns": {"text": opts.text_column, "id": opts.id_column},
             "carried": [list(pair) for pair in plan.carried],
             "positional_ids": bool(opts.positional_ids),
             "max_review_bytes": opts.max_review_bytes}
  increment = None
  if opts.since:
    if same_prefix(opts.since, opts.output):
      raise OptionsError("--since names the earlier run's output: give this "
                         "run a new --output prefix beside it")
    earlier = read_earlier_manifest(opts.since)
    full_run_because = another_model(earlier, model)
    if full_run_because:
      echo(f"--since {opts.since}: {full_run_because}; scoring everything")
    else:
      increment = plan_increment(plan, opts.since, earlier,
                                 output=opts.output, reading=reading)
      echo(increment.describe())
      plan = plan.restricted_to(increment.to_score)
  batching = _batching(opts, checked["buckets"], options=options,
                       direct=_runs_on_direct_runner(options))
  handler = TokenIdsModelHandler(
      saved_model_path(opts.model), signatures=checked["signatures"],
      model_fingerprint=card.model_fingerprint, precision=opts.precision,
      min_batch_size=checked["min_batch_size"],
      max_batch_size=opts.max_batch_size,
      max_batch_duration_secs=batching["max_batch_duration_secs"],
      length_bucketing=opts.length_bucketing,
      bucket_boundaries=batching["bucket_boundaries"],
      max_attempts=opts.inference_attempts,
      **_int8_copy_of(opts.model, card, checked["signatures"]))
  manifest = {"run_id": run_id, "input": opts.input, "format": plan.format,
              # Self-training reads the texts back by id where the scores
              # did not carry them.
              "columns": reading["columns"],
              "reading": reading,
              "model": model,
              "batching": {"min_batch_size": checked["min_batch_size"],
                           "max_batch_size": opts.max_batch_size,
                           "sort_wave_size": batching["sort_wave_size"],
                           "length_bucketing": opts.length_bucketing,
                           "bucket_boundaries": batching["bucket_boundaries"],
                           "max_batch_duration_secs":
                               batching["max_batch_duration_secs"]},
              "input_files": (increment.covered if increment else
                              plan.file_states()),
              "extends": increment.extends if increment else [],
              "increment": increment.record() if increment else None}

  try:
    p = beam.Pipeline(runner=batching["runner"], options=options)
  except (ValueError, ImportError, AttributeError) as e:  # an unknown --runner
    raise OptionsError(f"--runner: {_first_line(e)}") from None
  build_pipeline(p, plan=plan, card=card, handler=handler, paths=paths,
                 opts=opts, manifest=manifest,
                 sort_wave_size=batching["sort_wave_size"],
                 increment=increment)
  return PlannedRun(pipeline=p, paths=paths)


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
  written = read_manifest(paths)
  if written is None or written.get("run_id") != paths.run_id:
    raise PipelineFailed(f"the pipeline finished but {paths.manifest} was not "
                         "written by this run")
  metrics = _metric_counts(result)
  counts = written["counts"]
  if metrics.get("read") is not None and metrics["read"] != counts["read"]:
    logging.warning("metrics say %s read, the manifest %s", metrics["read"],
                    counts["read"])
  score = ScoreResult(
      output_prefix=paths.prefix, manifest_path=paths.manifest,
      score_files=written["scores"], error_files=written["errors"],
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
  quiet.import_tensorflow(keras=False)
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
