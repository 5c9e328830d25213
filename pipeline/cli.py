"""Click commands of the scoring side: score and report."""
import pathlib

import click

from schemas.inputs import INPUT_FORMATS


def _known_beam_args(args):
  """Extra arguments Beam does not know: typos of ours must not vanish."""
  from apache_beam.options.pipeline_options import (PipelineOptions,
                                                    _BeamArgumentParser)
  import pipeline.options  # noqa: F401  (registers ScoreOptions)
  parser = _BeamArgumentParser(allow_abbrev=False)
  seen = {}
  for cls in PipelineOptions.__subclasses__():
    seen.setdefault(str(cls), cls)
  for cls in seen.values():
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
  _, unknown = parser.parse_known_args(list(args))
  return [a for a in unknown if a.startswith("-")]


@click.command(context_settings=dict(ignore_unknown_options=True,
                                     allow_extra_args=True))
@click.option("--input", "input_glob", required=True,
              help="A file, a glob or a folder of parts: Parquet, CSV, JSON "
              "Lines, text lines or one-review files; local or any Beam "
              "filesystem URL.")
@click.option("--model", required=True,
              help="Model directory from `reviewscore train`: a local path or "
              "any Beam filesystem URL (gs://, s3://).")
@click.option("--output", required=True,
              help="Output prefix: PREFIX-SSSSS-of-NNNNN.parquet, "
              "PREFIX-errors/part-SSSSS-of-NNNNN.parquet (dead letters), PREFIX-manifest.json.")
@click.option("--format", "input_format", default="auto", show_default=True,
              type=click.Choice(("auto",) + INPUT_FORMATS),
              help="auto: by file name (*.parquet, *.csv, *.jsonl/*.ndjson, "
              "compressed too), else a folder → files (one review each), "
              "else text (one review per line). `_*` and `.*` files are "
              "skipped.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", default="review_id", show_default=True,
              help="Id column of table input: a file without it is an error "
              "unless --positional-ids.")
@click.option("--positional-ids", is_flag=True,
              help="Where a table file lacks the id column, number its rows "
              "FILE:ROW (stable only while the file does not change).")
@click.option("--carry-columns", default="",
              help="Table columns copied to the output, comma-separated; "
              "NAME:NEW renames (e.g. label:true_label).")
@click.option("--num-shards", default=0, show_default=True,
              type=click.IntRange(0, 100000), help="0: the runner decides.")
@click.option("--max-review-bytes", default=1_000_000, show_default=True,
              type=click.IntRange(1), help="Longer reviews are dead-lettered.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              help="auto: each worker scores in bfloat16 where its CPU "
              "computes it natively (AVX-512 BF16, AMX) and the model carries "
              "a bfloat16 copy, else in float32.")
@click.option("--min-batch-size", default=None, type=click.IntRange(1),
              help="Default: --max-batch-size (fixed batches).")
@click.option("--max-batch-size", default=32, show_default=True,
              type=click.IntRange(1, 65536))
@click.option("--max-batch-duration-secs", default=0.0, show_default=True,
              type=click.FloatRange(0),
              help="Longest a partial length bucket waits before it is "
              "scored (0: until its input ends). A limit needs a runner that "
              "fires processing-time timers while it runs (Dataflow, Flink); "
              "DirectRunner ignores it.")
@click.option("--length-bucketing/--no-length-bucketing", default=True,
              show_default=True,
              help="Batch reviews of similar token counts, padded to the "
              "batch's longest (Beam's stateful BatchElements); without it, "
              "batches form within bundles in arrival order.")
@click.option("--bucket-boundaries", default="",
              help="Token-count bucket edges, e.g. 64,128,256 (default: every "
              "16 tokens up to the model's sequence length).")
@click.option("--tokenize-batch-size", default=64, show_default=True,
              type=click.IntRange(1, 65536))
@click.option("--inference-attempts", default=3, show_default=True,
              type=click.IntRange(1, 10))
@click.pass_context
def score(ctx, input_glob, model, output, input_format, text_column,
          id_column, positional_ids, carry_columns, num_shards, max_review_bytes, precision,
          min_batch_size, max_batch_size, max_batch_duration_secs,
          length_bucketing, bucket_boundaries, tokenize_batch_size,
          inference_attempts):
  """Score reviews with a trained model in a Beam pipeline.

  Extra arguments go to Beam (--runner, --direct_num_workers, Dataflow's
  options...). Prints the counts: read = scored + dead-lettered.

  \b
  Example:
      reviewscore score --input ../shared/data/imdb/test.parquet \\
          --model models/quick --output scores/test --num-shards 4
      reviewscore score --input 'aclImdb/test' --format files \\
          --model models/quick --output scores/acl \\
          --direct_running_mode=multi_processing --direct_num_workers=2
  """
  from runtime.quiet import keep_pytorch_out
  keep_pytorch_out()
  from pipeline.options import parse_int_list
  if min_batch_size is not None and min_batch_size > max_batch_size:
    raise click.UsageError("--min-batch-size is larger than --max-batch-size")
  try:
    parse_int_list(bucket_boundaries)
  except ValueError as e:
    raise click.BadParameter(str(e), param_hint="--bucket-boundaries") from None
  unknown = _known_beam_args(ctx.args)
  if unknown:
    raise click.UsageError(f"no such option: {unknown[0]} (neither "
                           "reviewscore's nor Beam's)")
  argv = [f"--input={input_glob}", f"--model={model}", f"--output={output}",
          f"--format={input_format}", f"--text_column={text_column}",
          f"--id_column={id_column}", f"--carry_columns={carry_columns}",
          f"--num_shards={num_shards}", f"--max_review_bytes={max_review_bytes}",
          f"--max_batch_size={max_batch_size}",
          f"--bucket_boundaries={bucket_boundaries}",
          f"--tokenize_batch_size={tokenize_batch_size}",
          f"--inference_attempts={inference_attempts}"]
  argv.append(f"--max_batch_duration_secs={max_batch_duration_secs}")
  argv.append("--length_bucketing" if length_bucketing
              else "--no_length_bucketing")
  argv.append(f"--precision={precision}")
  if positional_ids:
    argv.append("--positional_ids")
  if min_batch_size is not None:  # else the pipeline's: --max-batch-size
    argv.append(f"--min_batch_size={min_batch_size}")
  from pipeline.run import SCORING_ERRORS, OptionsError, run
  try:
    result = run(argv + list(ctx.args),
                 echo=lambda message: click.echo(message, err=True))
  except OptionsError as e:  # a bad option, ours or Beam's: usage, exit 2
    raise click.UsageError(str(e)) from None
  except SCORING_ERRORS as e:
    raise click.ClickException(str(e)) from None
  counts = result.counts
  click.echo(f"scored {counts['scored']:,}, dead-lettered "
             f"{counts['dead_lettered']:,} of {counts['read']:,} read; "
             f"manifest {result.manifest_path}")


@click.command()
@click.argument("prefix")
@click.option("--labels", default=None,
              help="True labels: a column of the scored output (carried from "
              "the input, e.g. true_label) or a Parquet file joined by id.")
@click.option("--labels-id-column", default="review_id", show_default=True,
              help="Id column of a --labels file.")
@click.option("--labels-column", default="label", show_default=True,
              help="Label column of a --labels file (0/1 or class names).")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Where summary.json and the PNGs go.")
def report(prefix, labels, labels_id_column, labels_column, out_dir):
  """Summarise a scored output (all shards) with numbers and plots.

  Writes summary.json, score_histogram.png and label_shares.png; with true
  labels also accuracy and the rest in summary.json, roc.png, confusion.png
  and reliability.png. Reads shards in batches: memory does not grow with the
  number of scored rows.

  \b
  Example:
      reviewscore report scores/test --labels ../shared/data/imdb/test.parquet \\
          --out reports/test
  """
  from pipeline.report import ReportError, build_report, format_summary
  try:
    summary = build_report(prefix, out_dir, labels=labels,
                           labels_id_column=labels_id_column,
                           labels_column=labels_column)
  except ReportError as e:
    raise click.ClickException(str(e)) from None
  click.echo(format_summary(summary))
  click.echo(f"written to {out_dir}")
