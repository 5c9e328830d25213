"""`reviewscore optimize`: the OpenVINO copies (int8, float32) added to a
model after the fact.

The training, validation and test reviews are read again from the data the
model was trained on, chosen exactly as training chose them (its seed,
sizes and columns, from the card) and checked against the card's digests of
them: calibration sees training reviews only, and the guard compares int8
with float32 on the validation reviews training held out.
"""
import json
import os
import pathlib
from typing import Callable

import numpy as np

from schemas import model_dir as contract
from train.data import reviews as data_lib
from train.export import float32_copy, quantize
from engines.model_dir import ModelError, load_saved_model
from train.data.labels import LabelScheme
from train.loops.trainer import TokenizedReviews


def _tokenized(model, texts, labels, batch: int = 256) -> TokenizedReviews:
  """Token ids exactly as the exported model tokenizes (its own signature)."""
  import tensorflow as tf
  tokenize = model.signatures[contract.TOKENIZE_SIGNATURE]
  ids, lengths = [], []
  for start in range(0, len(texts), batch):
    out = tokenize(**{contract.TEXT_INPUT: tf.constant(texts[start:start + batch])})
    ids.append(out[contract.TOKEN_IDS].numpy())
    lengths.append(out[contract.NUM_TOKENS].numpy().astype(np.int32))
  width = max(i.shape[1] for i in ids)
  ids = [np.pad(i, ((0, 0), (0, width - i.shape[1]))) for i in ids]
  return TokenizedReviews(np.concatenate(ids).astype(np.int32),
                          np.concatenate(lengths), np.asarray(labels, np.int32))


def _splits_as_trained(card: contract.ModelCard, data_path):
  """(train, validation, test or None) as training chose them, checked."""
  settings = card.hyperparameters or {}
  data = card.data or {}
  trained_columns = data.get("columns") or {}
  columns = dict(text_column=trained_columns.get("text"),
                 label_column=trained_columns.get("label"),
                 id_column=trained_columns.get("id"))
  columns = {k: v for k, v in columns.items() if v}
  scheme = (LabelScheme.from_options(label_map=card.label_map)
            if card.label_map else LabelScheme(class_names=tuple(card.class_names)))
  seed = int(settings.get("seed", 42))
  labelled = data_lib.read_labelled(data_path, "train", labels=scheme, **columns)
  labelled = data_lib.sample(labelled, settings.get("max_examples"), seed=seed)
  train, validation = data_lib.split_train_validation(
      labelled, validation_fraction=float(settings.get("validation_fraction", 0.2)),
      seed=seed)
  test = None
  if data.get("test"):
    test = data_lib.read_labelled(data_path, "test", labels=scheme, **columns)
    if test is not None:
      test = data_lib.sample(test, data["test"].get("rows"), seed=seed)
  for name, split in (("train", train), ("validation", validation),
                      ("test", test)):
    recorded = (data.get(name) or {}).get("sha256")
    if split is None or recorded is None:
      continue
    if split.fingerprint() != recorded:
      raise data_lib.DataError(
          f"{data_path}: its {name} reviews are not the ones the model was "
          f"trained with (sha256 {split.fingerprint()[:12]}, the card says "
          f"{recorded[:12]}): give the data it was trained on")
  return train, validation, test


def optimize_model(model_dir, data_path, *,
                   max_accuracy_drop: float = contract.INT8_MAX_ACCURACY_DROP,
                   progress: Callable[[str], None] = print) -> dict:
  """Adds (or remakes) the int8 and float32 copies of a local model
  directory; returns the card as rewritten."""
  model_dir = pathlib.Path(model_dir)
  model, card = load_saved_model(model_dir)
  float32_signature = contract.classify_signature_for("float32")
  if float32_signature not in card.signatures:
    raise ModelError(f"{model_dir}: no float32 classifier to quantize "
                        f"(the model has {', '.join(card.precisions)})")
  train, validation, test = _splits_as_trained(card, data_path)
  progress(f"data: {len(train):,} training, {len(validation):,} validation, "
           f"{len(test) if test else 0:,} test reviews, as the model was "
           "trained")
  tokenized = {name: _tokenized(model, split.texts, split.labels)
               for name, split in (("train", train), ("validation", validation),
                                   ("test", test)) if split is not None}
  trained_in = (card.hyperparameters or {}).get("precision")
  float32_accuracy = None
  if trained_in == "float32" and card.metrics:
    float32_accuracy = {name: card.metrics[name]["accuracy"]
                        for name in tokenized if name in card.metrics
                        and name != "train"}
  copy, measured = quantize.make_int8_copy(
      model_dir, float32_signature=float32_signature, train=tokenized["train"],
      validation=tokenized["validation"], test=tokenized.get("test"),
      threshold=card.threshold, seed=int((card.hyperparameters or {}).get(
          "seed", 42)), float32_accuracy=float32_accuracy,
      max_accuracy_drop=max_accuracy_drop, progress=progress)
  try:
    float32_record = float32_copy.make_float32_copy(
        model_dir, float32_signature=float32_signature,
        validation=tokenized["validation"], progress=progress).to_dict()
  except float32_copy.CopyFailed as e:
    progress(f"float32 copy: none ({e}); scoring keeps TensorFlow")
    float32_record = {"offered": False, "reason": str(e)}
  by_precision = dict(card.accuracy_by_precision or {})
  if not by_precision and trained_in and card.metrics:
    import tensorflow as tf
    by_precision[trained_in] = {
        "runtime": f"tensorflow {tf.__version__}",
        **{f"{name}_accuracy": m["accuracy"] for name, m in card.metrics.items()
           if name != "train"}}
  by_precision.update(measured)
  rewritten = {**card.to_dict(), "int8": copy.to_dict(),
               "float32_copy": float32_record,
               "accuracy_by_precision": by_precision}
  contract.ModelCard.from_dict(rewritten)  # still a valid card
  card_path = model_dir / contract.MODEL_CARD_FILE
  partial = card_path.with_name(card_path.name + ".partial")
  partial.write_text(json.dumps(rewritten, indent=2, default=str))
  os.replace(partial, card_path)
  return rewritten
