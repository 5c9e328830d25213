"""The benchmarks' reviews and models.

Where the IMDB Parquet files are (DATA_DIR), a fixed-seed sample of test
reviews, models/bench-<L> exported from a trained model's weights at each
length L with hf_weights.npz beside them (the same weights under Hugging Face
BertModel names, for the PyTorch and ONNX peers, and what loads them back
into a BertModel), the model card and its BertConfig, useful FLOPs, and token
ids saved for a worker process and read back there. A part of
benchmarks/throughput.py and benchmarks/peers.py; not run on its own.
"""
import argparse
import hashlib
import json
import os
import pathlib
import shutil
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from schemas import model_dir as contract  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def default_data_dir() -> pathlib.Path:
  """The IMDB Parquet files as run_local.sh and the tests find them:
  $REVIEWSCORE_DATA, else ../shared/data/imdb beside the repository, else
  data/imdb in it (where run_local.sh or `reviewscore download-imdb` puts
  them). Every benchmark's `--data-dir` defaults to it."""
  if os.environ.get("REVIEWSCORE_DATA"):
    return pathlib.Path(os.environ["REVIEWSCORE_DATA"])
  beside = REPO.parent / "shared" / "data" / "imdb"
  return beside if (beside / "test.parquet").is_file() else REPO / "data" / "imdb"


DATA_DIR = default_data_dir()


def sample_reviews(n, seed=0, data_dir=DATA_DIR):
  import pyarrow.parquet as pq
  table = pq.read_table(data_dir / "test.parquet",
                        columns=["review_id", "text", "label"])
  rows = np.random.default_rng(seed).choice(table.num_rows, n, replace=False)
  table = table.take(rows)
  return (table.column("review_id").to_pylist(),
          table.column("text").to_pylist(),
          np.asarray(table.column("label").to_pylist(), np.int32))


def _code_stamp():
  digest = hashlib.sha256()
  for name in ("train/model/bert_backbone.py", "train/export/serving.py",
               "train/model/classifier.py", "train/data/review_packer.py"):
    digest.update((REPO / name).read_bytes())
  return digest.hexdigest()[:16]


def prepare_models(seq_lengths, *, weights_from, models_dir, log=print):
  """models/bench-<L>: the trained weights of `weights_from` exported at L.

  Also writes hf_weights.npz in each: the same weights under Hugging Face
  BertModel names (plus head.weight/head.bias) for the PyTorch peer.
  """
  import train  # noqa: F401  (TF_USE_LEGACY_KERAS)
  import tensorflow as tf
  import tensorflow_hub as hub
  from train.model.classifier import (build_classifier, scoring_copies,
                                weights_fingerprint)
  from train.encoders.source import resolve_encoder
  from train.export.serving import ServingModule, save_serving_model, write_json
  from train.data.review_packer import ReviewPacker

  weights_from = pathlib.Path(weights_from)
  source_card = json.loads((weights_from / contract.MODEL_CARD_FILE).read_text())
  stamp = _code_stamp()
  out = {}
  for seq in seq_lengths:
    target = pathlib.Path(models_dir) / f"bench-{seq}"
    out[seq] = target
    card_path = target / contract.MODEL_CARD_FILE
    if card_path.exists():
      card = json.loads(card_path.read_text())
      if card.get("bench", {}).get("code_stamp") == stamp and \
          card["bench"].get("weights_from") == str(weights_from.resolve()):
        continue
    log(f"exporting {target} ({seq} tokens) from {weights_from} ...")
    source = resolve_encoder(source_card["encoder"]["name"])
    model = build_classifier(source, precision="float32",
                             pooling=source_card["pooling"],
                             restore_encoder=False)
    tf.train.Checkpoint(model=model).read(
        str(weights_from / "best" / "weights")
    ).expect_partial().assert_existing_objects_matched()
    models = {"float32": model, **scoring_copies(
        model, source, precisions=["bfloat16"],
        pooling=source_card["pooling"])}
    truncation = "head" if seq <= source_card["seq_length"] else "head+tail"
    packer = ReviewPacker(hub.load(source.preprocessor), seq_length=seq,
                          truncation=truncation, head_tokens=128)
    module = ServingModule(packer, models, serving_precision="float32")
    if target.exists():
      shutil.rmtree(target)
    target.mkdir(parents=True)
    save_serving_model(module, target / contract.SAVED_MODEL_DIR)
    save_hf_weights(models["float32"], target / "hf_weights.npz")
    card = dict(source_card)
    card.update(model_name=target.name, seq_length=seq,
                truncation=packer.describe(), serving_precision="float32",
                precisions=sorted(models),
                signatures=sorted(module.signatures()),
                model_fingerprint=weights_fingerprint(models["float32"]),
                bench={"code_stamp": stamp,
                       "weights_from": str(weights_from.resolve())})
    write_json(card_path, card)
  return out


def save_hf_weights(model, path):
  from train.encoders.importer import hf_tensor_names
  backbone = model.get_layer("encoder")
  w = {name: (variable.numpy().T if transposed else variable.numpy())
       for name, variable, transposed in hf_tensor_names(backbone)}
  head = model.get_layer("classifier")
  w["head.weight"] = head.kernel.numpy().T
  w["head.bias"] = head.bias.numpy()
  np.savez(path, **w)


def load_hf_weights(bert, head, model_dir, *, pooler=True):
  """hf_weights.npz of `model_dir` into a transformers BertModel and a
  torch.nn.Linear head; `pooler=False` leaves out the [CLS] pooler's."""
  import torch
  weights = dict(np.load(pathlib.Path(model_dir) / "hf_weights.npz"))
  head.weight.data = torch.from_numpy(weights.pop("head.weight"))
  head.bias.data = torch.from_numpy(weights.pop("head.bias"))
  missing, unexpected = bert.load_state_dict(
      {k: torch.from_numpy(v) for k, v in weights.items()
       if pooler or not k.startswith("pooler.")}, strict=False)
  missing = [m for m in missing if not m.endswith("position_ids")]
  if missing or unexpected:
    raise RuntimeError(f"weights do not match: {missing} {unexpected}")


def read_card(model_dir):
  """The validated model card of a local model directory."""
  return contract.ModelCard.from_json(
      (pathlib.Path(model_dir) / contract.MODEL_CARD_FILE).read_text())


def bert_config(model_dir):
  from train.model.bert_config import BertConfig
  return BertConfig.from_dict(read_card(model_dir).encoder["bert_config"])


def useful_flops(config, lengths):
  return float(sum(int(n) * config.flops_per_token(int(n)) for n in lengths))


def write_tokens(path, tokens):
  np.savez(path, lengths=np.array([len(t) for t in tokens]),
           flat=np.concatenate(tokens))


def read_tokens(path):
  """Token id arrays saved as `lengths` and `flat` (np.savez)."""
  with np.load(path) as data:  # each data[key] reads the array anew
    lengths, flat = data["lengths"], data["flat"]
  return np.split(flat, np.cumsum(lengths)[:-1])


if __name__ == "__main__":  # a part of other scripts, not a benchmark
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.parse_args()
  parser.error("not a benchmark of its own: a part of throughput.py and peers.py")
