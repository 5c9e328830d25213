"""Options of the scoring pipeline, declared once (no Beam imported here).

`SCORE_OPTIONS` is the single declaration: Beam's `ScoreOptions`
(`pipeline/options.py`: argv with `--max_batch_size` or `--max-batch-size`,
for `run(argv)` and any Beam launcher) and the `reviewscore score` click
command (`pipeline/cli.py`) are both generated from it, and `check_values`
applies its bounds to either. Everything else in argv (`--runner`,
`--direct_num_workers`, Dataflow's...) belongs to Beam.
"""
import dataclasses
from typing import Any, Dict, List, Optional, Tuple

from runtime.hardware import AUTO, BFLOAT16, FLOAT16, FLOAT32, INT8
from schemas import columns as c
from schemas.inputs import INPUT_FORMATS

# Reviews longer than this are dead-lettered: one runaway file must not take
# a worker's memory.
DEFAULT_MAX_REVIEW_BYTES = 1_000_000
# Fixed batches: smaller or larger ones were no faster on CPU
# (benchmarks/results), and Beam's adaptive sizing starts at the minimum,
# which wastes the first batches.
DEFAULT_BATCH_SIZE = 32
# Batch jobs need no limit on how long a partial length bucket waits: a batch
# waits for its bucket to fill or the input to end, and Beam's local runners
# fail if such a timer is still pending at the end.
DEFAULT_MAX_BATCH_DURATION_SECS = 0.0
# Finer bucket edges pad less than power-of-two ones and measured faster at
# long sequence lengths (benchmarks/results).
BUCKET_STEP_TOKENS = 16
# Sorted waves of this many reviews pad as little as buckets every 16 tokens
# (benchmarks/scale.py --series padding), and a worker holds one wave.
DEFAULT_SORT_WAVE_SIZE = 4096


class OptionsError(ValueError):
  """A bad option, ours or Beam's: a usage error (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class ScoreOption:
  """One option: its name (Python and Beam spelling), default and bounds."""
  name: str
  help: str
  default: Any = None
  type: type = str
  choices: Optional[Tuple[str, ...]] = None
  minimum: Optional[float] = None
  maximum: Optional[float] = None
  required: bool = False
  negation: Optional[str] = None  # a boolean option's "off" name

  @property
  def flags(self) -> Tuple[str, ...]:
    return spellings(self.name)


def spellings(name: str) -> Tuple[str, ...]:
  return ("--" + name, "--" + name.replace("_", "-"))


SCORE_OPTIONS = (
    ScoreOption("input", "A file, a glob or a folder of parts: Parquet, CSV, "
                "JSON Lines, text lines or one-review files; local or any "
                "Beam filesystem URL.", required=True),
    ScoreOption("model", "Model directory from `reviewscore train`: a local "
                "path or any Beam filesystem URL (gs://, s3://).",
                required=True),
    ScoreOption("output", "Output prefix: PREFIX-SSSSS-of-NNNNN.parquet, "
                "PREFIX-errors/part-SSSSS-of-NNNNN.parquet (dead letters), "
                "PREFIX-manifest.json.", required=True),
    ScoreOption("format", "auto: by file name (*.parquet, *.csv, "
                "*.jsonl/*.ndjson, compressed too), else a folder → files "
                "(one review each), else text (one review per line). `_*` "
                "and `.*` files are skipped.", default="auto",
                choices=("auto",) + INPUT_FORMATS),
    ScoreOption("text_column", "Column with the review text (table input).",
                default=c.INPUT_TEXT),
    ScoreOption("id_column", "Id column of table input: a file without it is "
                "an error unless --positional-ids.", default=c.INPUT_ID),
    ScoreOption("positional_ids", "Where a table file lacks the id column, "
                "number its rows FILE:ROW (stable only while the file does "
                "not change).", default=False, type=bool),
    ScoreOption("carry_columns", "Table columns copied to the output, "
                "comma-separated; NAME:NEW renames (e.g. label:true_label).",
                default=""),
    ScoreOption("num_shards", "Output shards (0: the runner decides).",
                default=0, type=int, minimum=0, maximum=100_000),
    ScoreOption("max_review_bytes", "Longer reviews are dead-lettered as "
                "too_long.", default=DEFAULT_MAX_REVIEW_BYTES, type=int,
                minimum=1),
    ScoreOption("precision", "auto: each worker chooses, when it loads the "
                "model, among what the model carries: int8 (its ONNX Runtime "
                "copy) on any x86 CPU with AVX2 (an OpenVINO int8 copy of "
                "before 2026-12-08: where the CPU has VNNI or AMX), else "
                "bfloat16 where the CPU computes it natively (AVX-512 BF16, "
                "AMX), else float32. "
                "float32 on a CPU is computed by the model's OpenVINO float32 "
                "copy where it carries one; GPUs keep TensorFlow's float32. "
                "A precision forces it.",
                default=AUTO, choices=(AUTO, INT8, FLOAT32, BFLOAT16, FLOAT16)),
    ScoreOption("min_batch_size", "Smallest inference batch [default: "
                "--max-batch-size, fixed batches].", type=int, minimum=1),
    ScoreOption("max_batch_size", "Largest inference batch.",
                default=DEFAULT_BATCH_SIZE, type=int, minimum=1,
                maximum=65_536),
    ScoreOption("sort_wave_size", "Reviews are sorted by token count in "
                "waves of up to this many per worker before Beam's "
                "BatchElements cuts batches in arrival order, so a batch pads "
                "to a length close to its reviews' (0: arrival order). Memory "
                "stays flat however large the input.",
                default=DEFAULT_SORT_WAVE_SIZE, type=int, minimum=0,
                maximum=1_000_000),
    ScoreOption("length_bucketing", "Instead of sorted waves, Beam's stateful "
                "BatchElements keyed by token-count bucket: batches form "
                "across bundles, at the cost of a shuffle of every tokenized "
                "review (DirectRunner holds it in memory; Dataflow on disk).",
                default=False, type=bool, negation="no_length_bucketing"),
    ScoreOption("bucket_boundaries", "With --length-bucketing: token-count "
                "bucket edges, e.g. 64,128,256 [default: every 16 tokens up "
                "to the model's sequence length].", default=""),
    ScoreOption("max_batch_duration_secs", "With --length-bucketing: longest "
                "a partial bucket waits before it is scored (0: until its "
                "input ends). A limit needs a runner that fires "
                "processing-time timers while it runs (Dataflow, Flink); "
                "DirectRunner ignores it.",
                default=DEFAULT_MAX_BATCH_DURATION_SECS, type=float,
                minimum=0),
    ScoreOption("since", "Rerun: score only the input files that are new or "
                "changed (size, modification time) since the run that wrote "
                "this output PREFIX, with the same model; --output gets a new "
                "prefix, and the union of the runs' shards holds each review "
                "once."),
    ScoreOption("tokenize_batch_size", "Reviews per tokenizer call.",
                default=64, type=int, minimum=1, maximum=65_536),
    ScoreOption("inference_attempts", "Tries per inference batch (with "
                "backoff) before its reviews are dead-lettered.", default=3,
                type=int, minimum=1, maximum=10),
)
DEFAULTS = {option.name: option.default for option in SCORE_OPTIONS}


def default_bucket_boundaries(seq_length: int) -> List[int]:
  return list(range(BUCKET_STEP_TOKENS, seq_length + 1, BUCKET_STEP_TOKENS))


def parse_int_list(text: Optional[str]) -> List[int]:
  if not text:
    return []
  values = [int(v) for v in str(text).split(",") if v.strip()]
  if any(v <= 0 for v in values) or values != sorted(set(values)):
    raise ValueError("expected increasing positive integers, e.g. 32,64,128")
  return values


def parse_names(text: Optional[str]) -> List[str]:
  return [v.strip() for v in str(text or "").split(",") if v.strip()]


def check_values(values: Dict[str, Any]) -> None:
  """Required options present, numbers within bounds, batch sizes agree."""
  for option in SCORE_OPTIONS:
    value = values.get(option.name)
    name = "--" + option.name
    if option.required and not value:
      raise OptionsError(f"{name} is required")
    if value is None or option.type not in (int, float):
      continue
    if option.minimum is not None and value < option.minimum:
      raise OptionsError(f"{name} must be at least {option.minimum:g}")
    if option.maximum is not None and value > option.maximum:
      raise OptionsError(f"{name} must be at most {option.maximum:g}")
  minimum = values.get("min_batch_size")
  if minimum is not None and minimum > values["max_batch_size"]:
    raise OptionsError("--min_batch_size is larger than --max_batch_size")
  try:
    parse_int_list(values.get("bucket_boundaries"))
  except ValueError as e:
    raise OptionsError(f"--bucket_boundaries: {e}") from None
  if not values.get("length_bucketing"):
    # Silently ignoring them would drop a user's bucketing without a word.
    for name in ("bucket_boundaries", "max_batch_duration_secs"):
      if values.get(name) not in (None, DEFAULTS[name]):
        raise OptionsError(f"--{name} applies with --length_bucketing only "
                           "(by default reviews are sorted in waves: "
                           "--sort_wave_size)")
