"""The review classifier: encoder → pooled output → Dropout → Dense(1) logits.

It takes token ids (the three BERT inputs, any padded length) rather than
strings, so that training can tokenize once and pad each batch only to its
longest review; the exported SavedModel puts the preprocessor in front.
"""
import pathlib
from typing import Optional

import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from train.model.bert_backbone import BertBackbone
from train.model.bert_config import BertConfig
from train.encoders.source import EncoderSource
from train.model.seeded_dropout import SeededDropout
from train.settings import POOLINGS

# TF Hub's BERT encoder inputs, which the classifier takes unchanged.
INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
# Each precision setting's Keras mixed-precision policy.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16",
              "float16": "mixed_float16"}


def encoder_inputs(word_ids, mask) -> dict:
  """The classifier's inputs for single-segment token batches."""
  return dict(zip(INPUT_NAMES, (word_ids, mask, tf.zeros_like(word_ids)),
                  strict=True))


class MaskedMeanPooling(tf_keras.layers.Layer):
  """Mean of the sequence output over real (non-padding) tokens."""

  def call(self, sequence_output, mask):
    weights = tf.cast(mask, sequence_output.dtype)[:, :, tf.newaxis]
    total = tf.reduce_sum(sequence_output * weights, axis=1)
    return total / tf.maximum(tf.reduce_sum(weights, axis=1), 1)


def restore_backbone(backbone: BertBackbone, encoder_dir: str) -> None:
  """Reads imported weights into a fresh backbone by object path.

  The encoder SavedModel's root holds the backbone as `backbone`, so a
  checkpoint with the same structure matches variable for variable.
  """
  status = tf.train.Checkpoint(backbone=backbone).read(
      str(pathlib.Path(encoder_dir) / "variables" / "variables"))
  status.expect_partial().assert_existing_objects_matched()


def build_classifier(encoder: EncoderSource, *, precision: str = "float32",
                     pooling: str = "cls", dropout: float = 0.1,
                     num_classes: int = 2,
                     use_hub_layer: Optional[bool] = None,
                     restore_encoder: bool = True,
                     scoring_weights: bool = False) -> tf_keras.Model:
  """Builds the token-ids → logits model: one logit per review for two
  classes (the positive one's), one per class for more.

  Local encoders (from `import-encoder`) are rebuilt as our BertBackbone so
  that the mixed-precision policy applies to every matmul; hub handles (or
  `use_hub_layer=True`) load through `hub.KerasLayer(trainable=True)`, whose
  graph computes in the dtype it was saved with.

  `scoring_weights` (bfloat16 only) stores the encoder's matmul weights in
  bfloat16: a model for export, scoring exactly as the mixed-precision one
  (which rounds them to bfloat16 on every call) without the casts; not for
  training, whose updates need float32 weights.
  """
  if pooling not in POOLINGS:
    raise ValueError(f"pooling must be one of {POOLINGS}")
  if scoring_weights and precision != "bfloat16":
    raise ValueError("scoring_weights needs precision='bfloat16'")
  policy = tf_keras.mixed_precision.Policy(PRECISIONS[precision])
  inputs = {name: tf_keras.Input(shape=(None,), dtype=tf.int32, name=name)
            for name in INPUT_NAMES}
  if use_hub_layer is None:
    use_hub_layer = not encoder.is_local
  if use_hub_layer and scoring_weights:
    raise ValueError("scoring_weights applies to local encoders only")
  if use_hub_layer:
    encoder_layer = hub.KerasLayer(encoder.encoder, trainable=True,
                                   name="encoder")
  else:
    config = BertConfig.from_dict(encoder.local_info["bert_config"])
    encoder_layer = BertBackbone(
        config, name="encoder", dtype=policy,
        dense_dtype=tf_keras.mixed_precision.Policy("bfloat16")
        if scoring_weights else None)
  outputs = encoder_layer(inputs)
  if pooling == "cls":
    features = outputs["pooled_output"]
  else:
    features = MaskedMeanPooling(name="mean_pooling", dtype=policy)(
        outputs["sequence_output"], inputs["input_mask"])
  features = SeededDropout(dropout, salt="classifier/dropout", name="dropout",
                           dtype=policy)(features)
  # The head stays float32: logits feed a loss and a threshold.
  units = 1 if num_classes == 2 else num_classes
  logits = tf_keras.layers.Dense(units, name="classifier",
                                 dtype="float32")(features)
  if units == 1:
    logits = tf_keras.layers.Reshape((), name="logits", dtype="float32")(logits)
  model = tf_keras.Model(inputs, logits, name="review_classifier")
  if restore_encoder and not use_hub_layer:
    restore_backbone(encoder_layer, encoder.encoder)
  return model


class FrozenLayersUnsupported(Exception):
  """--frozen-layers asked of an encoder that cannot freeze that many."""


def trained_variables(model: tf_keras.Model, frozen_layers: int) -> list:
  """The variables fine-tuning updates: every trainable one but those of the
  encoder's lowest `frozen_layers` layers (the embeddings are the first).
  The model itself is unchanged (its weights keep their order for copies)."""
  if not frozen_layers:
    return list(model.trainable_variables)
  encoder = model.get_layer("encoder")
  if not isinstance(encoder, BertBackbone):
    raise FrozenLayersUnsupported(
        "--frozen-layers needs a local encoder (from `reviewscore "
        "import-encoder`); a TF Hub layer is trained whole")
  try:
    frozen = {v.ref() for v in encoder.lowest_layers_variables(frozen_layers)}
  except ValueError as e:
    raise FrozenLayersUnsupported(f"--frozen-layers {frozen_layers}: {e}") from None
  return [v for v in model.trainable_variables if v.ref() not in frozen]


def class_count(model: tf_keras.Model) -> int:
  """How many classes a classifier built here tells apart."""
  shape = model.output_shape
  return 2 if len(shape) == 1 else int(shape[-1])


def scoring_copies(model: tf_keras.Model, encoder: EncoderSource, *,
                   precisions, pooling: str, dropout: float = 0.1) -> dict:
  """Copies of a trained classifier to export, one per precision.

  The bfloat16 copy keeps its matmul weights in bfloat16 (scoring_weights):
  it scores exactly as a mixed-precision model, minus a cast of every weight
  on every batch.
  """
  copies = {}
  for precision in precisions:
    copy = build_classifier(encoder, precision=precision, pooling=pooling,
                            dropout=dropout, num_classes=class_count(model),
                            restore_encoder=False,
                            scoring_weights=precision == "bfloat16")
    copy.set_weights(model.get_weights())
    copies[precision] = copy
  return copies


def weights_fingerprint(model: tf_keras.Model) -> str:
  """sha256 over every weight's name and bytes: changes when any weight does."""
  import hashlib
  digest = hashlib.sha256()
  for variable in sorted(model.weights, key=lambda v: v.name):
    digest.update(variable.name.encode())
    digest.update(tf.cast(variable, tf.float32).numpy().tobytes())
  return digest.hexdigest()
