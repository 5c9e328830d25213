"""Click commands of the scoring side: score and report."""

import click

from schemas import columns


def score_options(command):
  """The scoring options as click options, from `pipeline.settings`' single
  declaration (dashed spellings; Beam's underscored ones work too)."""
  from pipeline.settings import SCORE_OPTIONS
  for option in reversed(SCORE_OPTIONS):
    dashed = option.flags[1]
    if option.type is bool:
      declaration = (f"{dashed}/{'--' + option.negation.replace('_', '-')}"
                     if option.negation else dashed)
      command = click.option(declaration, option.name, default=option.default,
                             is_flag=True,
                             show_default=bool(option.negation),
                             help=option.help)(command)
      continue
    if option.choices:
      kind = click.Choice(option.choices)
    elif option.type is int:
      kind = click.IntRange(option.minimum, option.maximum)
    elif option.type is float:
      kind = click.FloatRange(option.minimum, option.maximum)
    else:
      kind = click.STRING
    command = click.option(
        dashed, option.name, default=option.default, type=kind,
        required=option.required,
        show_default=option.default not in (None, ""),
        help=option.help)(command)
  return command


@click.command(context_settings=dict(ignore_unknown_options=True,
                                     allow_extra_args=True))
@score_options
@click.pass_context
def score(ctx, **values):
  """Score reviews with a trained model in a Beam pipeline.

  Extra arguments go to Beam (--runner, --direct_num_workers, Dataflow's
  options...). Prints the counts: read = scored + dead-lettered.

  \b
  Example:
      reviewscore score --input data/imdb/test.parquet \\
          --model models/quick --output scores/test --num-shards 4
      reviewscore score --input 'aclImdb/test' --format files \\
          --model models/quick --output scores/acl \\
          --direct_running_mode=multi_processing --direct_num_workers=2
  """
  from runtime.quiet import pytorch_kept_out
  # Values click filled in from the defaults stay out: they would override
  # the same options given in Beam's spelling (`--num_shards=4`), which
  # reach Beam in ctx.args, and Beam has the same defaults.
  given = {name: value for name, value in values.items()
           if ctx.get_parameter_source(name) is not
           click.core.ParameterSource.DEFAULT}
  # Beam's RunInference imports PyTorch where it is installed: not while
  # this command scores.
  with pytorch_kept_out():
    from pipeline.run import SCORING_ERRORS, OptionsError, run
    try:
      result = run(list(ctx.args),
                   echo=lambda message: click.echo(message, err=True), **given)
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
@click.option("--labels-id-column", default=columns.INPUT_ID, show_default=True,
              help="Id column of a --labels file.")
@click.option("--labels-column", default=columns.INPUT_LABEL, show_default=True,
              help="Label column of a --labels file (0/1 or class names).")
@click.option("--out", "out_dir", required=True,
              help="Where summary.json and the PNGs go: a local directory or "
              "a URL on any Beam filesystem.")
def report(prefix, labels, labels_id_column, labels_column, out_dir):
  """Summarise a scored output (all shards) with numbers and plots.

  Writes summary.json, score_histogram.png and label_shares.png; with true
  labels also accuracy and the rest in summary.json, roc.png, confusion.png
  and reliability.png. Reads shards in batches: memory does not grow with the
  number of scored rows.

  \b
  Example:
      reviewscore report scores/test --labels data/imdb/test.parquet \\
          --out reports/test
  """
  from pipeline.report import (SUMMARY_FILE, ReportError, build_report,
                               format_summary)
  from runtime.filesystems import UnreachableOutput, output_location
  try:
    with output_location(out_dir, last=(SUMMARY_FILE,)) as local_out:
      summary = build_report(prefix, local_out, labels=labels,
                             labels_id_column=labels_id_column,
                             labels_column=labels_column)
  except (ReportError, UnreachableOutput) as e:
    raise click.ClickException(str(e)) from None
  click.echo(format_summary(summary))
  click.echo(f"written to {out_dir}")
