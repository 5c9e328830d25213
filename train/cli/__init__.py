"""Click commands of the training side: import-encoder, download-imdb, train,
pretrain, optimize, evaluate, predict.

Thin by design: each command parses options and calls a library function that
tests call directly; library errors become one-line `click.ClickException`s.
"""
from train.cli.models import evaluate, optimize, predict
from train.cli.sources import download_imdb_command, import_encoder_command
from train.cli.training import pretrain, train

__all__ = ["download_imdb_command", "evaluate", "import_encoder_command",
           "optimize", "predict", "pretrain", "train"]
