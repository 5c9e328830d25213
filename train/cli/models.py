"""`optimize`, `evaluate` and `predict`: commands over a trained model directory."""
import click

from train.cli.options import (LABEL_MAP_HELP, echo_err, existing_or_glob,
                               input_columns, int8_max_drop,
                               labels_from_options, library_errors,
                               model_location, out_location)


@click.command("optimize")
@click.argument("model_dir", metavar="MODEL")
@click.option("--data", "data_path", required=True, callback=existing_or_glob,
              help="The labelled reviews MODEL was trained on (as given to "
              "`train --data`): its training reviews calibrate, its "
              "validation reviews guard.")
@int8_max_drop
def optimize(model_dir, data_path, int8_max_drop):
  """Add or remake a trained model's copies: int8 (ONNX Runtime), offered
  only if it holds accuracy, and float32 (OpenVINO), for CPU workers.

  The float32 classifier is converted to ONNX and quantized to dynamic int8
  (7-bit weights per channel: the same sums on every x86 CPU) into
  MODEL/int8, with its sha256 in the model card. It is offered only if, on
  the same held-out reviews (validation, then labelled reviews training did
  not use: 2,000 where the data has them), its accuracy is at most
  --int8-max-drop points below float32's; the card records both and how
  many decisions differ. The float32 classifier is also converted as it is
  into MODEL/float32, offered where its probabilities match TensorFlow's.
  A missing or damaged copy is remade; whatever fails, MODEL is left as it
  was. `reviewscore train` does both itself unless --no-int8 /
  --no-float32-copy.

  \b
  Example:
      reviewscore optimize models/quick --data data/imdb
  """
  import os
  from runtime.filesystems import is_remote
  from engines.model_dir import ModelError
  from train.data.labels import LabelError
  from train.export.optimize import CopiesFailed, optimize_model
  if is_remote(model_dir):
    raise click.BadParameter("a local model directory (copy it here first)",
                             param_hint="MODEL")
  if not os.path.isdir(model_dir):
    raise click.BadParameter(f"{model_dir}: no such directory",
                             param_hint="MODEL")
  try:
    card = optimize_model(model_dir, data_path,
                          max_accuracy_drop=int8_max_drop / 100,
                          progress=echo_err)
  except library_errors() + (ModelError, LabelError, CopiesFailed,
                              OSError) as e:
    raise click.ClickException(str(e)) from None
  int8 = card["int8"]
  click.echo(f"{model_dir}: int8 copy " + (
      f"offered (accuracy {int8['accuracy']:.4f}, float32 "
      f"{int8['float32_accuracy']:.4f} on the same "
      f"{int8['compared_reviews']:,} held-out reviews, "
      f"{int8['decisions_differing']} decisions differ)" if int8["offered"]
      else f"not offered: {int8['reason']}"))
  float32 = card["float32_copy"]
  click.echo(f"{model_dir}: float32 copy " + (
      "offered (probabilities within "
      f"{float32['largest_probability_difference']:.1e} of TensorFlow's)"
      if float32["offered"] else f"not offered: {float32['reason']}"))


@click.command()
@click.option("--model", "model_dir", required=True, callback=model_location,
              help="Directory written by `reviewscore train`: a local path or "
              "any Beam filesystem URL (gs://, s3://).")
@click.option("--data", "data_path", required=True, callback=existing_or_glob,
              help="Labelled reviews, as for `train`: a file, glob or folder "
              "of parts, or a pos/ + neg/ tree, is scored whole; a data "
              "folder by --split.")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["test", "train"]),
              help="Which split of a data folder (train.parquet / "
              "test.parquet or an aclImdb tree) to score.")
@click.option("--out", "out_dir", default=None, callback=out_location,
              help="Where metrics.json and the PNGs go, a local directory "
              "or a URL [default: MODEL/eval-SPLIT].")
@click.option("--max-examples", default=None, type=click.IntRange(1),
              help="Evaluate on a random subset.")
@input_columns
@click.option("--label-map", default=None,
              help=LABEL_MAP_HELP + " [default: the model's, from training]")
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
  from train.data.reviews import DataError
  from engines.model_dir import ModelError
  from train.export.evaluate import METRICS_FILE, evaluate_model
  if label_map:  # its syntax is the option's, checked as train checks it
    labels_from_options(None, label_map)
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
          positional_ids=positional_ids, say=echo_err)
  except (DataError, ModelError, UnreachableOutput) as e:
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
@click.option("--model", "model_dir", required=True, callback=model_location,
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
  from engines.model_dir import ModelError
  from train.export.evaluate import predict_texts
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
    results = predict_texts(model_dir, texts, say=echo_err)
  except ModelError as e:
    raise click.ClickException(str(e)) from None
  for text, (score, label) in zip(texts, results, strict=True):
    click.echo(f"{score:.6f}\t{label}\t{text}")
