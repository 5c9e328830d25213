"""One training run end to end: data → fine-tuning → export → model card.

`train_and_export` is what `reviewscore train` calls and what tests call.
"""
import datetime
import glob
import os
import pathlib
import platform
import shutil
import time
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from evaluation import metrics as metric_lib
from evaluation import plots
from schemas import columns
from schemas import model_dir as contract
from train.data import reviews as data_lib
from train.data.pseudo_labels import PseudoLabelled, read_pseudo_labels
from engines import onnx_bert
from train.export import copies
from train.model.classifier import (build_classifier, scoring_copies,
                                    trained_variables, weights_fingerprint)
from train.encoders.source import check_reachable, resolve_encoder
from runtime.filesystems import replace_dir
from train.export.serving import (ReloadCheck, ServingModule,
                          save_serving_model, write_json)
from runtime.filesystems import sha256_of
from train.data.labels import LabelScheme
from train.data.review_packer import ReviewPacker
from train.settings import resolve_auto
from train.loops.trainer import STATE_FILE, Trainer, TrainSettings, tokenize_reviews

RELOAD_SAMPLE = 32


class RunExists(Exception):
  """`--out` already holds a run and `--resume` was not given."""


def _versions() -> dict:
  import apache_beam
  import pyarrow
  import tensorflow_text
  import tf_keras
  return {"python": platform.python_version(), "tensorflow": tf.__version__,
          "tensorflow_text": tensorflow_text.__version__,
          "tf_keras": tf_keras.__version__, "tensorflow_hub": hub.__version__,
          "apache_beam": apache_beam.__version__, "pyarrow": pyarrow.__version__}


def _probabilities(logits: np.ndarray) -> np.ndarray:
  """The positive class's probability ([n] logits), or every class's."""
  return metric_lib.probabilities(logits).astype(np.float32)


def _pseudo_labelled(prefixes, settings, class_names, text_column, held_out,
                     progress) -> PseudoLabelled:
  """The teacher's confident rows, less any review of the validation or
  test split: those measure the student, so it must not train on them."""
  pseudo = read_pseudo_labels(
      prefixes, class_names=class_names, text_column=text_column,
      min_confidence=settings.pseudo_label_confidence,
      soft=settings.soft_pseudo_labels)
  held_out_texts = {text for split in held_out if split is not None
                    for text in split.texts}
  keep = np.array([text not in held_out_texts for text in pseudo.texts], bool)
  overlap = int((~keep).sum())
  if len(pseudo) and overlap > len(pseudo) // 2:
    raise data_lib.DataError(
        f"{', '.join(pseudo.summary['sources'])}: {overlap:,} of "
        f"{len(pseudo):,} "
        "pseudo-labelled reviews are "
        "validation or test reviews: score unlabelled reviews for "
        "--pseudo-labels, never the ones that measure the model")
  pseudo = pseudo.without(keep)
  pseudo.summary["left_out_as_held_out_reviews"] = overlap
  s = pseudo.summary
  per_class = ", ".join(f"{name} {count:,}" for name, count in zip(
      class_names, s["kept_per_class"], strict=True))
  teachers = len(s["teachers"])
  scored_by = ("the teacher" if teachers == 1
               else f"an ensemble of {teachers} teachers")
  progress(f"pseudo-labels: {s['kept']:,} of {s['scored']:,} reviews scored "
           f"by {scored_by} at confidence >= {s['min_confidence']:g} ({per_class}; "
           f"{'soft' if s['soft'] else 'hard'} targets)"
           + (f"; {overlap:,} left out: they are validation or test reviews"
              if overlap else ""))
  return pseudo


def _with_targets_as(targets: np.ndarray, tokenized):
  """The labelled split with labels of the pseudo targets' dtype (soft
  targets are float32 probabilities; labels become 0.0/1.0)."""
  import dataclasses
  return dataclasses.replace(tokenized,
                             labels=tokenized.labels.astype(targets.dtype))


class OutOverlapsInputs(Exception):
  """`--out` is, holds or lies in the data or the encoder it reads."""


def _refuse_out_among_inputs(out: pathlib.Path, data_path, encoder: str
                             ) -> None:
  """An --out that is, holds or lies in a data folder or the encoder (or
  holds a data file) would mix the model's files into what later runs read:
  its .json files read as JSON Lines parts of the data."""
  target = out.resolve()
  paths = data_path if isinstance(data_path, (list, tuple)) else [data_path]
  for what, given in [("--data", p) for p in paths] + [("--encoder", encoder)]:
    text = str(given)
    if "://" in text:
      continue
    pattern = glob.has_magic(text)
    if pattern:  # the folder it matches in
      text = text[:min(text.index(c) for c in "*?[" if c in text)]
      text = text if text.endswith(os.sep) else os.path.dirname(text)
    source = pathlib.Path(text or ".").resolve()
    if not source.exists():
      continue
    # A folder read whole (not a pattern's, which names its files).
    inside = source.is_dir() and not pattern and source in target.parents
    if target == source or target in source.parents or inside:
      raise OutOverlapsInputs(f"--out {out} overlaps {what} {given}: write "
                              "the model to a folder of its own")


def train_and_export(*, data_path, encoder: str, out, settings: TrainSettings,
                     preprocessor: Optional[str] = None,
                     text_column: str = columns.INPUT_TEXT, label_column: str = columns.INPUT_LABEL,
                     id_column: str = columns.INPUT_ID,
                     label_scheme: LabelScheme = data_lib.FROM_THE_DATA,
                     threshold: Optional[float] = None,
                     positional_ids: bool = False, resume: bool = False,
                     pseudo_labels: Sequence[str] = (),
                     max_test_examples: Optional[int] = None,
                     use_hub_layer: Optional[bool] = None,
                     progress: Callable[[str], None] = print,
                     log_every_steps: int = 20,
                     restore_best: bool = True,
                     int8: bool = True,
                     float32_copy_wanted: bool = True,
                     int8_max_accuracy_drop: float = contract.INT8_MAX_ACCURACY_DROP,
                     on_checkpoint: Optional[Callable[[], None]] = None) -> dict:
  """Trains, evaluates and exports; returns the model card (as written).

  `threshold` None chooses the decision threshold with the highest accuracy
  on the validation split. `pseudo_labels`: the output PREFIX of a scoring
  run over unlabelled reviews, or several over the same reviews (an
  ensemble teacher): the confident rows join the training split
  (self-training). `on_checkpoint` runs after each checkpoint is written
  (`runtime.state_mirror`). `int8`: also make the int8 copy
  (`train.export.quantize`), offered if its accuracy on held-out reviews is
  at most `int8_max_accuracy_drop` below float32's on the same reviews.
  `float32_copy_wanted`: also make the float32 copy
  (`train.export.float32_copy`) for CPU workers.
  """
  out = pathlib.Path(out)
  source = resolve_encoder(encoder, preprocessor=preprocessor)
  check_reachable(source.encoder)
  check_reachable(source.preprocessor)
  settings, resolved = resolve_auto(
      settings, encoder_pooling=source.default_pooling,
      has_gpu=bool(tf.config.list_physical_devices("GPU")))
  progress(f"settings: {resolved}")
  if not resume and ((out / STATE_FILE).exists() or
                     (out / contract.MODEL_CARD_FILE).exists()):
    # A finished model whose checkpoints were deleted to save space is
    # still a model: never replaced silently.
    raise RunExists(f"{out} already holds a training run or model: pass "
                    "--resume to continue it or choose another --out")
  _refuse_out_among_inputs(out, data_path, encoder)

  columns = dict(text_column=text_column, label_column=label_column,
                 id_column=id_column, positional_ids=positional_ids)
  labelled = data_lib.read_labelled(data_path, "train", labels=label_scheme,
                                    **columns)
  class_names = labelled.class_names
  unseen = [name for name, count in zip(class_names, np.bincount(
      labelled.labels, minlength=len(class_names)), strict=True) if not count]
  if unseen:
    raise data_lib.DataError(
        f"{data_path}: no training review of class {', '.join(map(repr, unseen))} "
        f"(classes {list(class_names)}): a classifier learns only the classes "
        "it sees")
  label_scheme = label_scheme.with_class_names(class_names)
  train_set, validation_set, unused_set = data_lib.training_splits(
      labelled, max_examples=settings.max_examples,
      validation_fraction=settings.validation_fraction, seed=settings.seed)
  dropped_by_label_map = labelled.dropped
  del labelled
  test_set = data_lib.read_labelled(data_path, "test", labels=label_scheme,
                                    **columns)
  if test_set is not None:
    test_set = data_lib.sample(test_set, max_test_examples, seed=settings.seed)
  dropped = dropped_by_label_map + (test_set.dropped if test_set else 0)
  # The same review in both makes the test metrics a training score.
  seen = set(train_set.texts) | set(validation_set.texts)
  test_in_training = sum(t in seen for t in test_set.texts) if test_set else 0
  del seen
  if test_in_training:
    progress(f"warning: {test_in_training:,} test reviews are also training or "
             "validation reviews (the same text): the test metrics overstate "
             "the model")
  progress(f"data: {len(train_set):,} training, {len(validation_set):,} "
           f"validation, {len(test_set) if test_set else 0:,} test reviews; "
           + (f"classes {class_names[0]} (negative), {class_names[1]} "
              "(positive)" if len(class_names) == 2 else
              f"{len(class_names)} classes {', '.join(class_names)}")
           + (f"; {dropped:,} rows matched no class of the label map and "
              "were left out" if dropped else ""))

  pseudo = None
  if pseudo_labels:
    pseudo = _pseudo_labelled(pseudo_labels, settings, class_names,
                              text_column, (validation_set, test_set), progress)

  packer = ReviewPacker(hub.load(source.preprocessor),
                        seq_length=settings.seq_length,
                        truncation=settings.truncation,
                        head_tokens=settings.head_tokens,
                        markup=settings.keep_markup)
  tokenized = {name: tokenize_reviews(packer, split.texts, split.labels)
               for name, split in (("train", train_set),
                                   ("validation", validation_set),
                                   ("test", test_set)) if split is not None}
  if pseudo is not None:
    tokenized["train"] = _with_targets_as(pseudo.targets, tokenized["train"]) + \
        tokenize_reviews(packer, pseudo.texts, pseudo.targets)
  # The int8 copy's guard: validation reviews, then reviews training never
  # used, up to INT8_GUARD_REVIEWS (tokenized now, while the packer is here).
  unused_for_guard = min(len(unused_set), max(
      0, contract.INT8_GUARD_REVIEWS - len(validation_set))) if int8 else 0
  unused_tokenized = (tokenize_reviews(
      packer, unused_set.texts[:unused_for_guard],
      unused_set.labels[:unused_for_guard]) if unused_for_guard else None)
  # The tokenizer copy is compared with the SavedModel on the same reviews.
  held_out_texts = list(validation_set.texts) + list(
      unused_set.texts[:unused_for_guard])
  del unused_set
  # The head's initial weights (and the first dropout masks) follow --seed:
  # the same command trains the same model.
  tf_keras.utils.set_random_seed(settings.seed)
  model = build_classifier(source, precision=settings.precision,
                           pooling=settings.pooling, dropout=settings.dropout,
                           num_classes=len(class_names),
                           use_hub_layer=use_hub_layer)
  # Refuses a --frozen-layers the encoder cannot take before --out is made.
  trained_variables(model, settings.frozen_layers)
  identity = {"encoder": source.provenance(),
              "train_sha256": train_set.fingerprint(),
              "validation_sha256": validation_set.fingerprint()}
  if pseudo is not None:
    identity["pseudo_labels_sha256"] = pseudo.fingerprint()
  # Only now that the data is read and checked: a refused run leaves no
  # empty --out behind.
  out.mkdir(parents=True, exist_ok=True)
  trainer = Trainer(model, settings, tokenized["train"], tokenized["validation"],
                    out, run_identity=identity, progress=progress,
                    log_every_steps=log_every_steps,
                    restore_best=restore_best, on_checkpoint=on_checkpoint)
  if resume and not trainer.restore():
    progress(f"nothing to resume in {out}: starting a new run")
  started = time.monotonic()
  state = trainer.run()
  trained = time.monotonic()

  # Started before evaluation, so that the fresh process that checks the
  # export imports TensorFlow while the model is evaluated and exported.
  with ReloadCheck() as reload_check:
    evaluation = {name: (split.labels,
                         _probabilities(trainer.logits(split, f"the {name} split")))
                  for name, split in tokenized.items() if name != "train"}
    if len(class_names) > 2:
      threshold, threshold_source = None, "none: the likeliest class wins"
    elif threshold is None:
      threshold = round(metric_lib.best_threshold(*evaluation["validation"]), 4)
      threshold_source = "highest validation accuracy"
    else:
      threshold_source = "given"
    metrics = {name: metric_lib.classification_metrics(
        labels, probabilities, class_names=class_names, threshold=threshold)
               for name, (labels, probabilities) in evaluation.items()}
    accuracies = ", ".join(f"{name} accuracy {m['accuracy']:.4f}"
                           for name, m in metrics.items())
    progress(f"threshold {threshold:g} ({threshold_source}); evaluation: "
             f"{accuracies}" if threshold is not None else
             f"evaluation: {accuracies}")

    classifiers = {settings.precision: model}
    if not use_hub_layer and source.is_local:
      # Copies so that scoring can choose its precision; a model trained in
      # float32 is its own float32 copy, every bfloat16 one is rebuilt. The
      # bfloat16 copy is exported even where this machine lacks native
      # bfloat16: the workers that score with it may have it.
      precisions = [p for p in ("float32", "bfloat16")
                    if p != "float32" or settings.precision != "float32"]
      classifiers.update(scoring_copies(model, source, precisions=precisions,
                                        pooling=settings.pooling,
                                        dropout=settings.dropout))
    serving_precision = "float32" if settings.precision == "float16" else settings.precision
    if serving_precision not in classifiers:
      serving_precision = settings.precision
    module = ServingModule(packer, classifiers, serving_precision=serving_precision,
                           threshold=threshold)

    staging = out / (contract.SAVED_MODEL_DIR + ".partial")
    if staging.exists():
      shutil.rmtree(staging)
    save_serving_model(module, staging)
    sample_texts = (test_set or validation_set).texts[:RELOAD_SAMPLE]
    in_memory = module.serve(tf.constant(sample_texts))[
        contract.OUTPUT_PROBABILITY].numpy()
    reload_difference = reload_check.check(staging, sample_texts, in_memory)
    progress(f"reload check: a fresh process reproduces the scores "
             f"(max difference {reload_difference:.2g})")
    # The card vouches for the SavedModel (its files' sha256): gone before
    # the SavedModel is replaced, so a run cut in between leaves a model
    # directory that says it is unfinished, never an old card over new weights.
    (out / contract.MODEL_CARD_FILE).unlink(missing_ok=True)
    replace_dir(staging, out / contract.SAVED_MODEL_DIR)
  files_sha256 = {name: sha256_of(out / contract.SAVED_MODEL_DIR / name)
                  for name in contract.CHECKED_FILES}

  exported = state["history"][trainer.exported_epoch - 1]
  metrics = {"train": {"accuracy": exported["accuracy"],
                       "loss": exported["loss"], "epoch": exported["epoch"]},
             **metrics}
  write_json(out / "history.json", state["history"])
  plots.training_curves(state["history"], out / "training_curves.png")
  if "test" in evaluation:
    labels, probabilities = evaluation["test"]
    if threshold is None:
      plots.confusion_plot(
          metrics["test"]["confusion_matrix"]["rows_true_cols_predicted"],
          class_names, out / "confusion.png")
    else:
      plots.reliability_diagram(labels, probabilities, out / "reliability.png")
      plots.score_histogram(probabilities, out / "score_histogram.png",
                            labels=labels, threshold=threshold,
                            class_names=class_names)

  guard, guard_from = copies.guard_reviews(
      tokenized["validation"], unused_tokenized, seed=settings.seed)
  export_done = time.monotonic()
  made = copies.make_copies(
      out, validation=tokenized["validation"], guard=guard,
      guard_from=guard_from, threshold=threshold, int8=int8,
      float32=float32_copy_wanted, architecture=onnx_bert.Architecture.of(
          source.provenance(), settings.pooling, threshold),
      max_accuracy_drop=int8_max_accuracy_drop, truncation=packer.describe(),
      held_out_texts=held_out_texts, progress=progress)
  accuracy_by_precision = {settings.precision: {
      "runtime": f"tensorflow {tf.__version__}",
      **{f"{name}_accuracy": m["accuracy"] for name, m in metrics.items()}},
      **made.measured}
  try:
    card = contract.ModelCard(
        format_version=contract.FORMAT_VERSION,
        model_name=out.resolve().name,
        model_fingerprint=weights_fingerprint(model),
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        class_names=list(class_names),
        threshold=threshold,
        seq_length=settings.seq_length,
        truncation=packer.describe(),
        pooling=settings.pooling,
        serving_precision=serving_precision,
        precisions=sorted(classifiers),
        signatures=sorted(module.signatures()),
        encoder=source.provenance(),
        hyperparameters=settings.to_dict(),
        label_map=label_scheme.describe()["label_map"],
        files_sha256=files_sha256,
        training={"epochs_run": len(state["history"]),
                  "threshold_from": threshold_source,
                  "best_epoch": state["best_epoch"],
                  "stopped_early": state["stopped_early"],
                  "exported_epoch": trainer.exported_epoch,
                  "exported_weights": ("lowest validation loss"
                                       if restore_best else "last epoch"),
                  "steps": trainer.step, "total_steps": trainer.total_steps},
        metrics=metrics,
        data={"train": train_set.summary(),
              "validation": validation_set.summary(),
              "test": test_set.summary() if test_set else None,
              "columns": {"text": text_column, "label": label_column,
                          "id": id_column},
              "positional_ids": positional_ids,
              "dropped_by_label_map": dropped,
              "test_reviews_in_training": test_in_training,
              "pseudo_labels": pseudo.summary if pseudo is not None else None},
        reload_check_max_difference=reload_difference,
        versions=_versions(),
        int8=made.int8,
        float32_copy=made.float32,
        accuracy_by_precision=accuracy_by_precision,
        tokenizer_copy=made.tokenizer,
    ).to_dict()
  except BaseException:
    copies.discard(out, made)
    raise
  # Written last, with the copies it describes: a model directory with a
  # card is a finished one.
  copies.install(out, made, lambda: write_json(out / contract.MODEL_CARD_FILE,
                                               card))
  done = time.monotonic()
  training_s = max(trained - started, 1e-9)
  progress(f"after training ({training_s:.0f}s): evaluation and export "
           f"{export_done - trained:.0f}s, copies {done - export_done:.0f}s "
           f"({(done - trained) / training_s:.0%} of the training time)")
  return card
