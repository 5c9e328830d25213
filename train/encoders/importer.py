"""Converts a Hugging Face BERT checkpoint into TF Hub-format SavedModels.

`OUT/encoder` is a reusable SavedModel (callable with `training`, with
`variables`, `trainable_variables` and `regularization_losses`) that
`hub.KerasLayer(path, trainable=True)` fine-tunes; `OUT/preprocessor` maps
strings to its inputs. `OUT/encoder_info.json` names where the weights came
from, with checksums, so that every model trained on them can cite its origin.
"""
import datetime
import json
import pathlib
import shutil
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from runtime.filesystems import replace_dir
from train.model.bert_backbone import BertBackbone, dummy_inputs
from train.model.bert_config import BertConfig
from train.model.bert_preprocessor import BertPreprocessor, read_vocabulary
from train.encoders.hf_checkpoint import HfCheckpoint
from train.settings import IMPORT_SEQ_LENGTH

ENCODER_DIR = "encoder"
PREPROCESSOR_DIR = "preprocessor"
INFO_FILE = "encoder_info.json"
BERT_CONFIG_FILE = "bert_config.json"
# Written by `reviewscore pretrain` while it runs; an encoder directory with
# it and without INFO_FILE is an unfinished pre-training run.
PRETRAIN_STATE_FILE = "pretrain_state.json"
FORMAT_VERSION = 1

_INPUT_SPEC = {
    name: tf.TensorSpec([None, None], tf.int32, name=name)
    for name in ("input_word_ids", "input_mask", "input_type_ids")
}


# Tensors of a `BertModel` start with these; task checkpoints such as
# bert-base-uncased (`BertForPreTraining`) add heads (`cls.*`, `classifier.*`)
# that an encoder does not use.
_ENCODER_PREFIXES = ("embeddings.", "encoder.", "pooler.")


def hf_tensor_names(backbone: BertBackbone):
  """(HF `BertModel` tensor name, our variable, whether it is transposed).

  The one place that knows how Hugging Face names BERT's weights: importing
  reads through it, and exporting (e.g. to compare with PyTorch) writes
  through it. HF stores Dense weights as [out, in], Keras as [in, out].
  """
  pairs = [
      ("embeddings.word_embeddings.weight", backbone.word_embeddings, False),
      ("embeddings.position_embeddings.weight", backbone.position_embeddings,
       False),
      ("embeddings.token_type_embeddings.weight", backbone.type_embeddings,
       False),
  ]

  def dense(layer, prefix):
    pairs.extend([(prefix + ".weight", layer.kernel, True),
                  (prefix + ".bias", layer.bias, False)])

  def norm(layer, prefix):
    pairs.extend([(prefix + ".weight", layer.gamma, False),
                  (prefix + ".bias", layer.beta, False)])

  norm(backbone.embedding_norm, "embeddings.LayerNorm")
  for i, block in enumerate(backbone.blocks):
    p = f"encoder.layer.{i}."
    dense(block.query, p + "attention.self.query")
    dense(block.key, p + "attention.self.key")
    dense(block.value, p + "attention.self.value")
    dense(block.attention_output, p + "attention.output.dense")
    norm(block.attention_norm, p + "attention.output.LayerNorm")
    dense(block.intermediate, p + "intermediate.dense")
    dense(block.output_dense, p + "output.dense")
    norm(block.output_norm, p + "output.LayerNorm")
  dense(backbone.pooler, "pooler.dense")
  return pairs


# Checkpoints converted from the original TF BERT (bert-base-uncased among
# them) keep its names LayerNorm.gamma / .beta, as HF still reads.
_LEGACY_NORM_NAMES = {"LayerNorm.weight": "LayerNorm.gamma",
                      "LayerNorm.bias": "LayerNorm.beta"}


def _assign_hf_weights(backbone: BertBackbone, weights: Dict[str, np.ndarray]):
  """Copies HF `BertModel` tensors into the backbone (Dense kernels transpose)."""
  used = set()
  for name, variable, transposed in hf_tensor_names(backbone):
    if name not in weights:
      suffix = next((k for k in _LEGACY_NORM_NAMES if name.endswith(k)), None)
      legacy = (name[:-len(suffix)] + _LEGACY_NORM_NAMES[suffix]
                if suffix else None)
      if legacy not in weights:
        raise ValueError(f"checkpoint lacks tensor {name!r}")
      name = legacy
    used.add(name)
    variable.assign(weights[name].T if transposed else weights[name])
  unused = [n for n in weights if n not in used and n.startswith(_ENCODER_PREFIXES)
            and not n.endswith("position_ids")]
  if unused:
    raise ValueError(f"checkpoint has tensors this BERT does not use: {unused[:5]}")


def backbone_from_checkpoint(checkpoint: HfCheckpoint) -> BertBackbone:
  config = BertConfig.from_hf_config(checkpoint.config)
  backbone = BertBackbone(config, name="bert_encoder")
  backbone(dummy_inputs())
  _assign_hf_weights(backbone, checkpoint.load_weights())
  return backbone


def save_hub_encoder(backbone: BertBackbone, path) -> None:
  """Saves a backbone as a TF Hub reusable SavedModel."""
  root = tf.train.Checkpoint()
  root.backbone = backbone
  root.variables = list(backbone.variables)
  root.trainable_variables = list(backbone.trainable_variables)
  root.regularization_losses = []

  @tf.function
  def call(inputs, training=False):
    return backbone(inputs, training=training)

  for training in (False, True):
    call.get_concrete_function(_INPUT_SPEC, training=training)
  root.__call__ = call
  tf.saved_model.save(root, str(path))


def save_preprocessor(vocabulary, *, lower_case: bool, seq_length: int,
                      path) -> None:
  preprocessor = BertPreprocessor(vocabulary, lower_case=lower_case,
                                  seq_length=seq_length)
  preprocessor.trace_for_export()
  tf.saved_model.save(preprocessor, str(path))


def import_encoder(checkpoint: HfCheckpoint, out, *,
                   seq_length: int = IMPORT_SEQ_LENGTH,
                   overwrite: bool = False) -> pathlib.Path:
  """Writes OUT/encoder, OUT/preprocessor and OUT/encoder_info.json.

  The old OUT (with `overwrite`) is replaced only once the new one is
  complete; an OUT that holds the checkpoint is refused.
  """
  out = pathlib.Path(out)
  source = checkpoint.directory.resolve()
  if source == out.resolve() or out.resolve() in source.parents:
    raise ValueError(f"{out} holds the checkpoint being converted "
                     f"({checkpoint.directory}): write the encoder elsewhere")
  if out.exists() and not out.is_dir():
    raise FileExistsError(f"{out} is a file, not a folder")
  if out.exists() and any(out.iterdir()) and not overwrite:
    raise FileExistsError(f"{out} exists and is not empty (use --overwrite)")
  # Written under a temporary name and renamed at the end, so that a crash
  # never leaves a directory that looks like a finished import.
  staging = out.with_name(out.name + ".partial")
  if staging.exists():
    shutil.rmtree(staging)
  staging.mkdir(parents=True)
  try:
    _write_encoder(checkpoint, staging, seq_length=seq_length)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  replace_dir(staging, out)
  return out


def _write_encoder(checkpoint: HfCheckpoint, staging: pathlib.Path, *,
                   seq_length: int) -> None:
  backbone = backbone_from_checkpoint(checkpoint)
  save_hub_encoder(backbone, staging / ENCODER_DIR)
  save_preprocessor(read_vocabulary(checkpoint.vocab_path),
                    lower_case=checkpoint.do_lower_case, seq_length=seq_length,
                    path=staging / PREPROCESSOR_DIR)
  info = {
      "format_version": FORMAT_VERSION,
      "checkpoint": checkpoint.metadata(),
      "bert_config": backbone.config.to_dict(),
      "preprocessor": {"seq_length": seq_length,
                       "lower_case": checkpoint.do_lower_case,
                       "vocab_size": len(read_vocabulary(checkpoint.vocab_path))},
      "imported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "tensorflow": tf.__version__,
  }
  (staging / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))


def read_encoder_info(directory) -> Optional[dict]:
  path = pathlib.Path(directory) / INFO_FILE
  return json.loads(path.read_text()) if path.exists() else None
