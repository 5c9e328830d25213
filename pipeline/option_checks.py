"""Every check of `reviewscore score`'s options, in one place.

`parse_options` reads them (Beam's argv and Python values; ours and
Beam's), refusing unknown, repeated and out-of-range ones; then, once the
model card is read, `check_against_model` says what they mean for that model
and the runner: the classify signatures the workers may use, how batches
form, the engine DirectRunner runs on. Both raise OptionsError (exit 2).
"""
import dataclasses
import sys
from typing import Any, Dict, List, Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (DirectOptions,
                                                  PipelineOptions, SetupOptions,
                                                  StandardOptions, WorkerOptions)

from engines.model_dir import copy_path
from pipeline.options import BadOptionValue, ScoreOptions, unknown_flags
from pipeline.settings import (DEFAULTS, OptionsError, check_values,
                               default_bucket_boundaries, parse_int_list)
from runtime import quiet
from runtime.filesystems import missing_filesystem, same_prefix
from schemas.model_dir import ModelCard, ModelCardError


@dataclasses.dataclass(frozen=True)
class CheckedOptions:
  """What the options mean for one model on one runner."""
  signatures: Dict[str, str]  # precision → classify signature the workers may use
  min_batch_size: int
  sort_wave_size: int  # 0: no length-sorted waves
  bucket_boundaries: Optional[List[int]]  # with --length-bucketing
  max_batch_duration_secs: Optional[float]
  runner: Any  # None: the runner --runner names
  # precision -> the copy computing it (`scoring_model.CopySpec` fields:
  # engine, folder, model file, what its files hash to), for the precisions
  # the workers may use.
  copies: Dict[str, Dict[str, Any]]
  # The tokenizer copy ({"folder", "record"}), where the model offers one.
  tokenizer: Optional[Dict[str, Any]] = None


def parse_options(argv: Optional[List[str]], values: Dict[str, Any], *,
                  save_main_session: bool = True) -> PipelineOptions:
  """The pipeline options of argv (sys.argv when None) and `values` (these
  win); OptionsError for anything neither ours nor Beam's, or out of range."""
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
  return options


def check_against_model(opts: ScoreOptions, card: ModelCard, *,
                        options: PipelineOptions, model_dir: str
                        ) -> CheckedOptions:
  """What the options mean for this model and runner; OptionsError when
  they ask for what it does not carry or the runner cannot do."""
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
  buckets = (parse_int_list(opts.bucket_boundaries)
             or default_bucket_boundaries(card.seq_length))
  unreachable = missing_filesystem(opts.output)
  if unreachable:
    raise OptionsError(unreachable)
  if opts.since and same_prefix(opts.since, opts.output):
    raise OptionsError("--since names the earlier run's output: give this "
                       "run a new --output prefix beside it")
  return CheckedOptions(
      signatures=signatures, min_batch_size=min_batch_size,
      copies=_copies_of(model_dir, card, signatures),
      tokenizer=_tokenizer_of(model_dir, card),
      **_batching(opts, buckets, options=options,
                  direct=runs_on_direct_runner(options)))


def _copies_of(model_dir: str, card: ModelCard, signatures
               ) -> Dict[str, Dict[str, Any]]:
  """The copies of the precisions the workers may score in."""
  return {precision: {"engine": copy.engine,
                      "folder": copy_path(model_dir, copy),
                      "model_file": copy.model_file,
                      "files_sha256": copy.files_sha256}
          for precision, copy in card.copies.items()
          if precision in signatures}


def _tokenizer_of(model_dir: str, card: ModelCard) -> Optional[Dict[str, Any]]:
  """The tokenizer copy every worker uses where the model offers one."""
  copy = card.fast_tokenizer
  if copy is None:
    return None
  return {"folder": copy_path(model_dir, copy.copy), "record": copy.to_dict()}


_DIRECT_RUNNER_NAMES = ("directrunner", "direct", "switchingdirectrunner")


def runs_on_direct_runner(options: PipelineOptions) -> bool:
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
