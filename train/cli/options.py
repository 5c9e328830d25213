"""Options and callbacks the training commands share, and the one way a
command runs into an output folder (`mirrored_output`)."""
import contextlib
import pathlib

import click

from schemas.model_dir import INT8_MAX_ACCURACY_DROP
from train.settings import PretrainSettings, TrainSettings


def out_location(ctx, param, value):
  """A local directory, or a URL on a Beam filesystem this environment has
  (written locally first, then copied there: runtime.filesystems)."""
  if value is None:
    return None
  if "://" in str(value):
    from runtime.filesystems import missing_filesystem
    unreachable = missing_filesystem(str(value))
    if unreachable:
      raise click.BadParameter(unreachable)
    return str(value)
  return pathlib.Path(value)


def refuse_finished_output(out, finished_file: str, resume: bool) -> None:
  """A bucket output that already holds a finished result is not replaced
  by a new run (locally the run directory itself says so)."""
  from runtime.filesystems import is_remote, join_path
  if not is_remote(str(out)) or resume:
    return
  from apache_beam.io.filesystems import FileSystems
  if FileSystems.exists(join_path(str(out), finished_file)):
    raise click.ClickException(f"{out} already holds {finished_file}: choose "
                               "another --out")



def state_mirror(out, local_out, *, resume: bool, **layout):
  """For a URL --out, the mirror that keeps the run's checkpoints there
  while it runs (a new machine resumes from them), having taken them back
  on --resume; None for a local --out. A finished run clears them: the
  model is what stays."""
  from runtime.state_mirror import StateMirror
  mirror = StateMirror.for_output(out, local_out, progress=echo_err, **layout)
  if mirror:
    mirror.start(resume=resume)
  return mirror


def library_errors():
  """The exceptions that mean bad input rather than a bug: one line each."""
  from runtime.state_mirror import UnfinishedRunThere
  from train.data.reviews import DataError
  from train.encoders.source import EncoderUnavailable
  from train.export.serving import ReloadMismatch
  from train.encoders.hf_checkpoint import CheckpointError
  from train.loops.pretrain import PretrainError
  from train.run import OutOverlapsInputs, RunExists
  from train.loops.checkpoints import ResumeMismatch
  from train.loops.trainer import TrainingDiverged
  return (DataError, EncoderUnavailable, ReloadMismatch, CheckpointError,
          RunExists, ResumeMismatch, TrainingDiverged, FileExistsError,
          PretrainError, UnfinishedRunThere, OutOverlapsInputs)


def echo_err(message: str) -> None:
  click.echo(message, err=True)


def setting(name: str, *flags, settings_class=TrainSettings, **kwargs):
  """A click option whose default is TrainSettings' (or `settings_class`'s:
  declared there once)."""
  default = settings_class.__dataclass_fields__[name].default
  return click.option(*flags, name, default=default, show_default=True,
                      **kwargs)


def pretrain_setting(name: str, *flags, **kwargs):
  return setting(name, *flags, settings_class=PretrainSettings, **kwargs)


def loop_options(settings_class):
  """The options of LoopSettings, which `train` and `pretrain` share, with
  `settings_class`'s defaults."""
  def option(name, *flags, **kwargs):
    return setting(name, *flags, settings_class=settings_class, **kwargs)
  options = [
      option("batch_size", "--batch-size", type=click.IntRange(1, 4096)),
      option("learning_rate", "--learning-rate",
             type=click.FloatRange(0, 1, min_open=True)),
      option("warmup_fraction", "--warmup-fraction", type=click.FloatRange(0, 1),
             help="Share of the steps over which the learning rate rises "
             "from 0; it then falls linearly to 0."),
      option("weight_decay", "--weight-decay", type=click.FloatRange(0, 1)),
      option("keep_markup", "--keep-markup/--drop-markup",
             help="Keep HTML line breaks (<br />) in the text, or replace "
             "them by spaces (in training and in the exported tokenizer)."),
      option("checkpoint_every_steps", "--checkpoint-every",
             type=click.IntRange(1),
             help="Steps between checkpoints (`--resume` continues from the "
             "last)."),
      option("seed", "--seed", type=int,
             help="Seeds every random choice: split, batches, masks, dropout."),
  ]

  def decorate(command):
    for add in reversed(options):
      command = add(command)
    return command
  return decorate


def model_location(ctx, param, value):
  """A local directory that exists, or a URL (checked when it is read)."""
  if value is None or "://" in value or pathlib.Path(value).is_dir():
    return value
  raise click.BadParameter(f"Directory '{value}' does not exist.")


def existing_or_glob(ctx, param, value):
  """A path that exists, a glob (a folder of parts by pattern), or a URL on
  a Beam filesystem this environment has."""
  import glob
  if value is not None and "://" in value:
    from runtime.filesystems import missing_filesystem
    unreachable = missing_filesystem(value)
    if unreachable:
      raise click.BadParameter(unreachable)
    return value
  if value is not None and glob.has_magic(value) and not glob.glob(
      value, recursive=True):
    raise click.BadParameter(f"'{value}' matches no file.")
  if value is None or glob.has_magic(value) or pathlib.Path(value).exists():
    return value if value is None else pathlib.Path(value)
  raise click.BadParameter(f"Path '{value}' does not exist.")


def input_columns(command):
  """--text-column, --label-column and --id-column (shared by train and
  evaluate; the defaults are the schema's)."""
  from schemas import columns
  for flag, default, help_text in reversed((
      ("--text-column", columns.INPUT_TEXT, "Column with the review text."),
      ("--label-column", columns.INPUT_LABEL,
       "Column with the label: two class names, 0/1, or numbers mapped by "
       "--label-map."),
      ("--id-column", columns.INPUT_ID,
       "Column with a unique review id: a table without it is an error "
       "unless --positional-ids."))):
    command = click.option(flag, default=default, show_default=True,
                           help=help_text)(command)
  return click.option(
      "--positional-ids", is_flag=True,
      help="Where a table file lacks the id column, number its rows "
      "FILE:ROW.")(command)


LABEL_MAP_HELP = ("Map a numeric label column to two classes, negative "
                   "first: e.g. 'neg:<=2,pos:>=4' for 1-5 stars. Rows that "
                   "meet neither condition are left out and counted.")


def labels_from_options(class_names, label_map):
  from train.data.labels import LabelError, LabelScheme
  try:
    return LabelScheme.from_options(class_names=class_names,
                                    label_map=label_map)
  except LabelError as e:
    raise click.BadParameter(str(e), param_hint="--label-map" if label_map
                             else "--class-names") from None


# Both `train` and `optimize` guard the int8 copy with it.
int8_max_drop = click.option(
    "--int8-max-drop", default=INT8_MAX_ACCURACY_DROP * 100, show_default=True,
    type=click.FloatRange(0, 100),
    help="Accuracy points (on the validation split) the int8 copy may lose "
    "against float32 and still be offered.")


def threshold_value(ctx, param, value):
  if value is None or value == "auto":
    return None
  try:
    threshold = float(value)
  except ValueError:
    threshold = -1.0
  if not 0.0 < threshold < 1.0:
    raise click.BadParameter(f"{value!r} is neither auto nor a number "
                             "between 0 and 1")
  return threshold


DATA_HELP = ("aclImdb-style tree (train/pos, train/neg, optional test/); a "
              "Parquet, CSV or JSON Lines file, a glob or a folder of parts; "
              "or a directory with train.parquet and test.parquet.")


@contextlib.contextmanager
def mirrored_output(out, *, finished_file: str, folders, state_file: str,
                    resume: bool):
  """The local folder a run writes (for a URL --out, copied there at the
  end), and the callback that mirrors each checkpoint there while it runs;
  library errors become one line. A finished run clears the mirrored
  checkpoints: what it wrote is what stays."""
  from runtime.filesystems import UnreachableOutput, output_location
  from train.model.classifier import FrozenLayersUnsupported
  refuse_finished_output(out, finished_file, resume)
  mirror = None
  try:
    with output_location(out, skip=tuple(folders),
                         last=(finished_file,)) as local_out:
      mirror = state_mirror(out, local_out, resume=resume,
                            folders=tuple(folders), state_file=state_file)
      yield local_out, mirror and mirror.push
  except FrozenLayersUnsupported as e:
    # A bad option that only the encoder can tell: a usage error.
    raise click.UsageError(str(e)) from None
  except library_errors() + (UnreachableOutput,) as e:
    raise click.ClickException(str(e)) from None
  if mirror:
    mirror.clear()
