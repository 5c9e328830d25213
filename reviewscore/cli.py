"""`reviewscore` command line: each command lives beside the code it drives."""
import click

from pipeline.cli import report, score
from train.cli import evaluate, import_encoder_command, predict, train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reviewscore")
def main():
  """Fine-tune BERT on labelled reviews and score review archives.

  \b
  reviewscore import-encoder encoders/minilm
  reviewscore train --data ../shared/data/imdb --encoder encoders/minilm --out models/m1
  reviewscore score --input 'reviews/*.parquet' --model models/m1 --output scores/run1
  """


for command in (import_encoder_command, train, evaluate, predict, score, report):
  main.add_command(command)


if __name__ == "__main__":
  main()
