"""`reviewscore optimize`: a model's copies (int8, float32, tokenizer) added or
remade after the fact.

The labelled reviews are read again from the data the model was trained on
and split exactly as training split them (`training_splits`: its seed,
sizes and columns, from the card), checked against the card's digests: the
int8 guard compares int8 with float32 on the same held-out reviews as
training would have (validation, then reviews training did not use).
"""
import pathlib
from typing import Callable

import numpy as np

from engines import onnx_bert
from engines.model_dir import ModelError, load_saved_model
from schemas import model_dir as contract
from train.data import reviews as data_lib
from train.export import copies
from train.export.serving import write_json
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
  """(validation, unused, the columns) as training chose them, checked
  against the card's digests."""
  settings = card.hyperparameters or {}
  data = card.data or {}
  trained_columns = data.get("columns") or {}
  columns = dict(text_column=trained_columns.get("text"),
                 label_column=trained_columns.get("label"),
                 id_column=trained_columns.get("id"))
  columns = {k: v for k, v in columns.items() if v}
  # Reviews without an id column were numbered by their place.
  columns["positional_ids"] = bool(data.get("positional_ids"))
  scheme = (LabelScheme.from_options(label_map=card.label_map)
            if card.label_map else LabelScheme(class_names=tuple(card.class_names)))
  labelled = data_lib.read_labelled(data_path, "train", labels=scheme, **columns)
  train, validation, unused = data_lib.training_splits(
      labelled, max_examples=settings.get("max_examples"),
      validation_fraction=float(settings.get("validation_fraction", 0.2)),
      seed=int(settings.get("seed", 42)))
  for name, split in (("train", train), ("validation", validation)):
    recorded = (data.get(name) or {}).get("sha256")
    if recorded is not None and split.fingerprint() != recorded:
      raise data_lib.DataError(
          f"{data_path}: its {name} reviews are not the ones the model was "
          f"trained with (sha256 {split.fingerprint()[:12]}, the card says "
          f"{recorded[:12]}): give the data it was trained on")
  return validation, unused


def _head_only(seq_length: int) -> dict:
  """The packing of a card that records none (the first wordpieces)."""
  return {"seq_length": seq_length, "truncation": "head",
          "head_tokens": seq_length - 2, "tail_tokens": 0}


class CopiesFailed(Exception):
  """A copy could not be made: the model directory is as it was."""


def optimize_model(model_dir, data_path, *,
                   max_accuracy_drop: float = contract.INT8_MAX_ACCURACY_DROP,
                   progress: Callable[[str], None] = print) -> dict:
  """Adds (or remakes, where missing or damaged) the int8 and float32
  copies of a local model directory; returns the card as rewritten. Only
  the SavedModel and the card are checked first: the copies are what this
  replaces."""
  model_dir = pathlib.Path(model_dir)
  model, card = load_saved_model(model_dir, check_copies=False)
  if contract.classify_signature_for("float32") not in card.signatures:
    raise ModelError(f"{model_dir}: no float32 classifier to copy "
                     f"(the model has {', '.join(card.precisions)})")
  validation, unused = _splits_as_trained(card, data_path)
  needed = max(0, contract.INT8_GUARD_REVIEWS - len(validation))
  unused = unused.subset(np.arange(min(needed, len(unused))))
  progress(f"data: {len(validation):,} validation reviews and {len(unused):,} "
           "that training did not use, as the model was trained")
  validation_tokens = _tokenized(model, validation.texts, validation.labels)
  unused_tokens = (_tokenized(model, unused.texts, unused.labels)
                   if len(unused) else None)
  del model
  guard, guard_from = copies.guard_reviews(
      validation_tokens, unused_tokens,
      seed=int((card.hyperparameters or {}).get("seed", 42)))
  made = copies.make_copies(
      model_dir, validation=validation_tokens, guard=guard,
      guard_from=guard_from, threshold=card.threshold, int8=True,
      float32=True, architecture=onnx_bert.Architecture.of(
          card.encoder, card.pooling, card.threshold),
      max_accuracy_drop=max_accuracy_drop,
      truncation=card.truncation or _head_only(card.seq_length),
      held_out_texts=list(validation.texts) + list(unused.texts),
      progress=progress)
  if made.failed:
    copies.discard(model_dir, made)
    raise CopiesFailed("; ".join(made.failed) + f" ({model_dir} is as it was)")
  by_precision = {name: record for name, record in
                  (card.accuracy_by_precision or {}).items()
                  if name != contract.INT8}
  by_precision.update(made.measured)
  rewritten = {**card.to_dict(), "int8": made.int8,
               "float32_copy": made.float32, "tokenizer_copy": made.tokenizer,
               "accuracy_by_precision": by_precision}
  contract.ModelCard.from_dict(rewritten)  # still a valid card
  copies.install(model_dir, made, lambda: write_json(
      model_dir / contract.MODEL_CARD_FILE, rewritten))
  return rewritten
