"""Options of the scoring pipeline, as Beam PipelineOptions.

Beam's convention: one argv for everything; the options here are ours, the
rest (`--runner`, `--direct_num_workers`, Dataflow's...) go to Beam. Each
option accepts Beam's underscore spelling and the CLI's dashed one.
"""
from typing import List, Optional

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.plan import FORMATS
from pipeline.read import DEFAULT_MAX_REVIEW_BYTES
from runtime.hardware import AUTO, BFLOAT16, FLOAT16, FLOAT32
from schemas import columns as c

# Fixed batches: smaller or larger ones were no faster on CPU (benchmarks/),
# and Beam's adaptive sizing starts at the minimum, which wastes the first
# batches.
DEFAULT_BATCH_SIZE = 32
# How long a partial length bucket may wait (processing time). Batch jobs
# need no limit: a batch waits for its bucket to fill or the input to end.
# Beam's local runners fail if such a timer is still pending at the end.
DEFAULT_MAX_BATCH_DURATION_SECS = 0.0
# Bucket edges every 16 tokens up to the model's sequence length: finer
# edges pad less than power-of-two ones, and measured faster at long
# sequence lengths (benchmarks/results).
BUCKET_STEP_TOKENS = 16


def default_bucket_boundaries(seq_length: int) -> List[int]:
  return list(range(BUCKET_STEP_TOKENS, seq_length + 1, BUCKET_STEP_TOKENS))


def _both(name: str):
  return ("--" + name, "--" + name.replace("_", "-"))


def parse_int_list(text: Optional[str]) -> List[int]:
  if not text:
    return []
  values = [int(v) for v in str(text).split(",") if v.strip()]
  if any(v <= 0 for v in values) or values != sorted(set(values)):
    raise ValueError("expected increasing positive integers, e.g. 32,64,128")
  return values


def parse_names(text: Optional[str]) -> List[str]:
  return [v.strip() for v in str(text or "").split(",") if v.strip()]


class ScoreOptions(PipelineOptions):
  """`--input GLOB --model DIR --output PREFIX` and how to get there."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(*_both("input"), dest="input", default=None,
                        help="File, glob or folder of reviews.")
    parser.add_argument(*_both("model"), dest="model", default=None,
                        help="Model directory: saved_model/ + model_card.json.")
    parser.add_argument(*_both("output"), dest="output", default=None,
                        help="Output prefix: PREFIX-SSSSS-of-NNNNN.parquet.")
    parser.add_argument(*_both("format"), dest="format", default="auto",
                        choices=("auto",) + FORMATS,
                        help="auto: by file name (Parquet, CSV, JSON Lines), "
                        "else a folder → files, else text lines.")
    parser.add_argument(*_both("text_column"), dest="text_column",
                        default=c.INPUT_TEXT)
    parser.add_argument(*_both("id_column"), dest="id_column",
                        default=c.INPUT_ID,
                        help="Id column of table input (required there "
                        "unless --positional_ids).")
    parser.add_argument(*_both("positional_ids"), dest="positional_ids",
                        action="store_true", default=False,
                        help="Where a table file lacks the id column, "
                        "number its rows FILE:ROW instead of failing.")
    parser.add_argument(*_both("carry_columns"), dest="carry_columns",
                        default="", help="Comma-separated table columns "
                        "copied to the output unchanged.")
    parser.add_argument(*_both("num_shards"), dest="num_shards", type=int,
                        default=0, help="Output shards (0: the runner's "
                        "choice).")
    parser.add_argument(*_both("max_review_bytes"), dest="max_review_bytes",
                        type=int, default=DEFAULT_MAX_REVIEW_BYTES,
                        help="Longer reviews are dead-lettered as too_long.")
    parser.add_argument(*_both("precision"), dest="precision",
                        default=AUTO, choices=(AUTO, FLOAT32, BFLOAT16, FLOAT16),
                        help="auto: each worker picks bfloat16 where its CPU "
                        "computes it natively and the model carries a "
                        "bfloat16 copy, else float32.")
    parser.add_argument(*_both("min_batch_size"), dest="min_batch_size",
                        type=int, default=None,
                        help="Default: --max_batch_size (fixed batches).")
    parser.add_argument(*_both("max_batch_size"), dest="max_batch_size",
                        type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(*_both("max_batch_duration_secs"),
                        dest="max_batch_duration_secs", type=float,
                        default=DEFAULT_MAX_BATCH_DURATION_SECS,
                        help="Longest a partial length bucket waits before it "
                        "is scored (default 0: until its input ends). A "
                        "limit needs a runner that fires processing-time "
                        "timers while it runs (Dataflow, Flink); DirectRunner "
                        "ignores it.")
    parser.add_argument(*_both("length_bucketing"), dest="length_bucketing",
                        action="store_true", default=True,
                        help="Batch reviews of similar token counts "
                        "(the default).")
    parser.add_argument(*_both("no_length_bucketing"),
                        dest="length_bucketing", action="store_false",
                        help="Batch reviews in arrival order.")
    parser.add_argument(*_both("bucket_boundaries"), dest="bucket_boundaries",
                        default="", help="Token-count bucket edges for "
                        "length bucketing (default: every "
                        f"{BUCKET_STEP_TOKENS} tokens up to the model's "
                        "sequence length).")
    parser.add_argument(*_both("tokenize_batch_size"),
                        dest="tokenize_batch_size", type=int, default=64)
    parser.add_argument(*_both("inference_attempts"),
                        dest="inference_attempts", type=int, default=3,
                        help="Tries per inference batch (with backoff) before "
                        "its reviews are dead-lettered.")
