"""`train` and `pretrain`: the two training loops as commands."""
import click

from train.cli.options import (DATA_HELP, LABEL_MAP_HELP, echo_err,
                               existing_or_glob, input_columns, int8_max_drop,
                               labels_from_options, library_errors,
                               loop_options, mirrored_output, out_location,
                               pretrain_setting, setting, threshold_value)
from train.presets import DEFAULT_PRESET, PRESETS
from train.settings import (AUTO, POOLINGS, PRECISIONS, PRETRAIN_PRECISIONS,
                            TRUNCATIONS, PretrainSettings, TrainSettings)


@click.command()
@click.option("--data", "data_path", required=True, callback=existing_or_glob,
              help=DATA_HELP)
@click.option("--encoder", required=True,
              help="Directory from `import-encoder`, a tutorial name such as "
              "small_bert/bert_en_uncased_L-4_H-512_A-8, or a TF Hub URL.")
@click.option("--out", required=True, callback=out_location,
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
@setting("epochs", "--epochs", type=click.IntRange(1, 100))
@loop_options(TrainSettings)
@setting("seq_length", "--seq-length", type=click.IntRange(16, 512),
          help="Wordpieces per review.")
@setting("truncation", "--truncation", type=click.Choice(TRUNCATIONS),
          help="Keep the first wordpieces, or the first --head-tokens and "
          "the last ones (Sun et al. 2019).")
@setting("head_tokens", "--head-tokens", type=click.IntRange(1, 510),
          help="Head length for head+tail [default: a quarter of "
          "--seq-length].")
@setting("precision", "--precision",
          type=click.Choice((AUTO,) + PRECISIONS),
          help="Mixed precision. auto: bfloat16 where the CPU computes it "
          "natively (AVX-512 BF16, AMX), else float32; float16 needs a GPU.")
@setting("pooling", "--pooling", type=click.Choice((AUTO,) + POOLINGS),
          help="Encoder pooled output ([CLS] + tanh) or masked mean. auto: "
          "what the encoder was trained for (mean for sentence-transformers "
          "checkpoints such as all-MiniLM-L6-v2, cls for TF Hub BERTs).")
@setting("dropout", "--dropout", type=click.FloatRange(0, 1, max_open=True))
@setting("frozen_layers", "--frozen-layers", type=click.IntRange(0, 100),
          help="Leave the encoder's lowest N layers as pre-trained: 1 the "
          "embeddings, 2 also the first transformer block, and so on. Steps "
          "are faster (no gradient below them); a local encoder only.")
@setting("patience", "--patience", type=click.IntRange(0, 100),
          help="Early stopping: epochs without a lower validation loss "
          "before stopping (0 = never); the best weights are restored.")
@click.option("--restore-best/--keep-last", default=True, show_default=True,
              help="Export the epoch with the lowest validation loss, or the "
              "last one.")
@setting("max_examples", "--max-examples", type=click.IntRange(10),
          help="Use a random subset of the labelled reviews (quick runs).")
@click.option("--max-test-examples", default=None, type=click.IntRange(1),
              help="Evaluate on a random subset of the test reviews.")
@setting("validation_fraction", "--validation-fraction",
          type=click.FloatRange(0, 1, min_open=True, max_open=True))
@setting("length_bucketing", "--length-bucketing/--no-length-bucketing",
          help="Batch reviews of similar length together.")
@input_columns
@click.option("--class-names", default=None,
              help="NEGATIVE,POSITIVE: the names of label values 0 and 1, or "
              "the order of two named classes [default: from the data, "
              "sorted; neg,pos for 0/1].")
@click.option("--label-map", default=None, help=LABEL_MAP_HELP)
@click.option("--threshold", default="auto", show_default=True,
              callback=threshold_value,
              help="Decision threshold on the positive-class probability; "
              "auto: the one with the highest validation accuracy.")
@click.option("--pseudo-labels", multiple=True, metavar="PREFIX",
              help="Self-training: the --output PREFIX of a `reviewscore "
              "score` run over unlabelled reviews (texts carried with "
              "--carry-columns text, or read back from its table input); its "
              "confident rows join the training split. Given more than once "
              "(runs of several models over the same reviews), the models' "
              "mean probabilities label the reviews: an ensemble teacher.")
@setting("pseudo_label_confidence", "--pseudo-label-confidence",
          type=click.FloatRange(0, 1),
          help="Keep a pseudo-labelled review when the teacher's likeliest "
          "class has at least this probability.")
@setting("soft_pseudo_labels", "--soft-pseudo-labels/--hard-pseudo-labels",
          help="Two classes: train towards the teacher's probability, or "
          "its label.")
@click.option("--int8/--no-int8", default=True, show_default=True,
              help="After export, add an int8 copy of the classifier (ONNX "
              "Runtime, dynamic int8 with 7-bit weights: faster than float32 "
              "on every x86 CPU), offered to scoring only if its accuracy on "
              "2,000 held-out reviews is within --int8-max-drop of "
              "float32's on the same reviews (needs the [int8] extra).")
@int8_max_drop
@click.option("--float32-copy/--no-float32-copy", default=True,
              show_default=True,
              help="After export, add a float32 copy of the classifier in "
              "OpenVINO's format, which CPU workers score with (faster than "
              "TensorFlow there; offered only if its probabilities match "
              "TensorFlow's on validation reviews).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint.")
@click.pass_context
def train(ctx, data_path, encoder, out, preset, preprocessor, restore_best,
          max_test_examples, text_column, label_column, id_column,
          positional_ids, class_names, label_map, threshold, pseudo_labels,
          int8, int8_max_drop, float32_copy, resume, **setting_values):
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
  label_scheme = labels_from_options(class_names, label_map)
  from schemas.model_dir import MODEL_CARD_FILE
  from train.loops.trainer import BEST_DIR, CHECKPOINT_DIR, STATE_FILE
  with mirrored_output(out, finished_file=MODEL_CARD_FILE,
                       folders=(CHECKPOINT_DIR, BEST_DIR),
                       state_file=STATE_FILE, resume=resume) as (
                           local_out, on_checkpoint):
    card = train_and_export(
        data_path=data_path, encoder=encoder, out=local_out,
        settings=settings, preprocessor=preprocessor,
        text_column=text_column, label_column=label_column,
        id_column=id_column, label_scheme=label_scheme,
        threshold=threshold, positional_ids=positional_ids, resume=resume,
        pseudo_labels=pseudo_labels, max_test_examples=max_test_examples,
        progress=echo_err, restore_best=restore_best, int8=int8,
        int8_max_accuracy_drop=int8_max_drop / 100,
        float32_copy_wanted=float32_copy, on_checkpoint=on_checkpoint)
  summary = {split: round(m["accuracy"], 4)
             for split, m in card["metrics"].items() if m.get("accuracy") is not None}
  click.echo(f"model written to {out} (fingerprint {card['model_fingerprint'][:12]}); "
             f"accuracy {summary}")


@click.command()
@click.option("--data", "data_paths", required=True, multiple=True,
              callback=lambda ctx, param, values: tuple(
                  existing_or_glob(ctx, param, v) for v in values),
              help="Unlabelled text, repeatable: a Parquet, CSV or JSON Lines "
              "file, a glob or folder of parts, a folder of .txt files, an "
              "aclImdb tree (its train/ folder) or a data folder (its train "
              "and unsup splits: test text is never trained on).")
@click.option("--encoder", required=True,
              help="Encoder directory from `import-encoder` (or `pretrain`).")
@click.option("--out", required=True, callback=out_location,
              help="Encoder directory to write, local or a bucket URL; it "
              "holds the run's checkpoints until it ends.")
@click.option("--text-column", default=None,
              help="Column with the text in table files [default: the "
              "schema's review text column].")
@pretrain_setting("steps", "--steps", type=click.IntRange(1),
                   help="Optimizer steps of the whole run.")
@loop_options(PretrainSettings)
@pretrain_setting("seq_length", "--seq-length", type=click.IntRange(16, 512),
                   help="Wordpieces per chunk, [CLS] and [SEP] included.")
@pretrain_setting("head_learning_rate_multiplier", "--head-learning-rate-multiplier",
                   type=click.FloatRange(0, 1000, min_open=True),
                   help="The prediction head (new: checkpoints such as "
                   "all-MiniLM-L6-v2 have none) learns at this multiple of "
                   "--learning-rate.")
@pretrain_setting("mask_fraction", "--mask-fraction",
                   type=click.FloatRange(0, 0.5, min_open=True),
                   help="Share of each chunk's wordpieces predicted, chosen "
                   "a whole word at a time.")
@pretrain_setting("precision", "--precision",
                   type=click.Choice((AUTO,) + PRETRAIN_PRECISIONS),
                   help="auto: bfloat16 where the CPU computes it natively.")
@pretrain_setting("validation_chunks", "--validation-chunks",
                   type=click.IntRange(1),
                   help="Chunks held out to measure the loss at each checkpoint.")
@pretrain_setting("max_texts", "--max-texts", type=click.IntRange(10),
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
  from schemas import columns
  from train.data.texts import read_texts
  from train.encoders.importer import INFO_FILE, PRETRAIN_STATE_FILE
  from train.loops.pretrain import CHECKPOINT_DIR
  from train.loops.pretrain import pretrain as run_pretraining
  try:
    texts = read_texts(data_paths, text_column=text_column or columns.INPUT_TEXT)
  except library_errors() as e:
    raise click.ClickException(str(e)) from None
  echo_err(f"read {len(texts):,} texts from "
           + ", ".join(f"{s['source']} ({s['rows']:,})" for s in texts.sources))
  with mirrored_output(out, finished_file=INFO_FILE, folders=(CHECKPOINT_DIR,),
                       state_file=PRETRAIN_STATE_FILE, resume=resume) as (
                           local_out, on_checkpoint):
    info = run_pretraining(texts=texts, encoder=encoder, out=local_out,
                           settings=PretrainSettings(**setting_values),
                           resume=resume, progress=echo_err,
                           on_checkpoint=on_checkpoint)
  after = info["pretraining"]["held_out_after"]
  before = info["pretraining"]["held_out_before"]
  click.echo(f"encoder written to {out}: held-out masked-wordpiece loss "
             f"{before['val_loss']:.4f} → {after['val_loss']:.4f}, accuracy "
             f"{before['val_accuracy']:.4f} → {after['val_accuracy']:.4f}")
