"""Options of the scoring pipeline, as Beam PipelineOptions.

Beam's convention: one argv for everything; the options here are ours, the
rest (`--runner`, `--direct_num_workers`, Dataflow's...) go to Beam. Each
option accepts Beam's underscore spelling and the CLI's dashed one.
"""
from typing import List, Optional

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.io import DEFAULT_MAX_REVIEW_BYTES, FORMATS
from schemas import columns as c

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


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
                        help="auto: *.parquet → parquet, folder → files, "
                        "else text lines.")
    parser.add_argument(*_both("text_column"), dest="text_column",
                        default=c.INPUT_TEXT)
    parser.add_argument(*_both("id_column"), dest="id_column",
                        default=c.INPUT_ID,
                        help="Used when present; else ids are file:row.")
    parser.add_argument(*_both("carry_columns"), dest="carry_columns",
                        default="", help="Comma-separated Parquet columns "
                        "copied to the output unchanged.")
    parser.add_argument(*_both("num_shards"), dest="num_shards", type=int,
                        default=0, help="Output shards (0: the runner's "
                        "choice).")
    parser.add_argument(*_both("max_review_bytes"), dest="max_review_bytes",
                        type=int, default=DEFAULT_MAX_REVIEW_BYTES,
                        help="Longer reviews are dead-lettered as too_long.")
    parser.add_argument(*_both("precision"), dest="precision", default=None,
                        help="One of the model card's precisions (default: "
                        "its serving precision).")
    parser.add_argument(*_both("min_batch_size"), dest="min_batch_size",
                        type=int, default=1)
    parser.add_argument(*_both("max_batch_size"), dest="max_batch_size",
                        type=int, default=64)
    parser.add_argument(*_both("max_batch_duration_secs"),
                        dest="max_batch_duration_secs", type=float,
                        default=None, help="Buffer batches this long at most; "
                        "Beam's stateful batching, which length bucketing "
                        "needs.")
    parser.add_argument(*_both("length_bucketing"), dest="length_bucketing",
                        action="store_true", default=False,
                        help="Batch reviews of similar token counts "
                        "(takes effect with --max_batch_duration_secs).")
    parser.add_argument(*_both("bucket_boundaries"), dest="bucket_boundaries",
                        default=",".join(map(str, DEFAULT_BUCKETS)),
                        help="Token-count bucket edges for length bucketing.")
    parser.add_argument(*_both("tokenize_batch_size"),
                        dest="tokenize_batch_size", type=int, default=64)
    parser.add_argument(*_both("inference_attempts"),
                        dest="inference_attempts", type=int, default=3,
                        help="Tries per inference batch (with backoff) before "
                        "its reviews are dead-lettered.")
