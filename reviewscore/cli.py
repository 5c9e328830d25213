"""`reviewscore` command line: each command lives beside the code it drives."""
import sys

import click

import train as _tf_keras_switch  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
from runtime import quiet

# Commands that load TensorFlow only where they need it (`score`: workers
# computing with the SavedModel, without Keras; not those with the copies),
# or never: no reason to pay for its import up front.
_WITHOUT_TENSORFLOW = {"report", "download-imdb", "score"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reviewscore")
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's, absl's and Beam's own log lines too "
              f"(or set {quiet.VERBOSE_ENV}=1).")
@click.pass_context
def main(ctx, verbose):
  """Fine-tune BERT on labelled reviews and score review archives.

  \b
  reviewscore download-imdb data/imdb
  reviewscore import-encoder encoders/minilm
  reviewscore train --data data/imdb --encoder encoders/minilm --out models/m1
  reviewscore score --input 'reviews/*.parquet' --model models/m1 --output scores/run1
  """
  quiet.set_verbose(verbose)
  quiet.quiet_process()
  # click runs this before the subcommand parses its options: a --help
  # must not wait for TensorFlow.
  asking_for_help = {"-h", "--help"} & set(sys.argv[1:])
  if ctx.invoked_subcommand not in _WITHOUT_TENSORFLOW and not asking_for_help:
    quiet.import_tensorflow()


def _add_commands():
  from pipeline.cli import report, score
  from train.cli import (download_imdb_command, evaluate,
                         import_encoder_command, optimize, predict, pretrain,
                         train)
  for command in (download_imdb_command, import_encoder_command, pretrain,
                  train, optimize, evaluate, predict, score, report):
    main.add_command(command)


_add_commands()


if __name__ == "__main__":
  sys.exit(main())
