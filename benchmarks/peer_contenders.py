"""The contenders peers.py runs against each other, one to a process.

Ours (the model handler with the product's defaults) and the peers: PyTorch
in bfloat16, the same under torch.compile, and ONNX Runtime on the exported,
transformer-optimized graph in float32 and with dynamic int8 quantisation.
Each warms up, takes a thread count, and scores token ids (ours) batch by
batch into logits; every peer batches reviews sorted by length, each batch
padded to its longest review. end_to_end.py wraps a peer (make_peer) in the
script a user would write. A part of benchmarks/peers.py; not run on its own.
"""
import argparse
import json
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks.reviews_and_models import (load_hf_weights,  # noqa: E402
                                           read_card)
from benchmarks.scoring_paths import make_batches  # noqa: E402
from pipeline.settings import DEFAULTS as PIPELINE_DEFAULTS  # noqa: E402
from schemas import model_dir as contract  # noqa: E402

PEER_BATCHES = (8, 16, 32, 64)
OURS_BATCH = PIPELINE_DEFAULTS["max_batch_size"]  # the product's default


def sorted_batches(lengths, batch):
  """Reviews sorted by length, then cut: how every peer batches."""
  return make_batches(lengths, batch=batch, mode="sorted")


def padded(tokens, rows):
  length = max(len(tokens[r]) for r in rows)
  ids = np.zeros((len(rows), length), np.int64)
  mask = np.zeros((len(rows), length), np.int64)
  for j, r in enumerate(rows):
    ids[j, :len(tokens[r])] = tokens[r]
    mask[j, :len(tokens[r])] = 1
  return ids, mask


def torch_scorer(model_dir, *, attention="sdpa"):
  """BertModel + mean pooling + linear head with the fine-tuned weights."""
  import torch
  import transformers
  from train.encoders.hf_checkpoint import minilm_directory

  class Scorer(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.bert = transformers.BertModel.from_pretrained(
          str(minilm_directory()), add_pooling_layer=False,
          attn_implementation=attention)
      self.head = torch.nn.Linear(self.bert.config.hidden_size, 1)

    def forward(self, input_ids, attention_mask):
      hidden = self.bert(input_ids=input_ids,
                         attention_mask=attention_mask).last_hidden_state
      mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
      pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
      return self.head(pooled).squeeze(-1).float()

  scorer = Scorer().eval()
  # Mean pooling: the [CLS] pooler's weights are not used.
  load_hf_weights(scorer.bert, scorer.head, model_dir, pooler=False)
  return scorer


class TorchContender:

  def __init__(self, model_dir, compiled, bfloat16=True):
    import torch
    self.torch = torch
    self.model = torch_scorer(model_dir)
    if bfloat16:
      self.model = self.model.to(torch.bfloat16)
    self.info = {"torch": torch.__version__}
    if compiled:
      import torch._inductor.config as inductor
      inductor.freezing = True
      self.model = torch.compile(self.model, dynamic=True)

  def warm_up(self, tokens):
    """Every batch size of the sweep over every length once, untimed: the
    compiler specialises on some sizes (1, and the first it sees) and
    compiles a shape-generic graph at the next; no sweep pays for it."""
    start = time.perf_counter()
    lengths = [len(t) for t in tokens]
    for batch in (1,) + PEER_BATCHES:
      self.score(tokens, sorted_batches(lengths, batch))
    return time.perf_counter() - start

  def configure(self, threads):
    self.torch.set_num_threads(threads)

  def score(self, tokens, batches):
    logits = np.zeros(len(tokens), np.float32)
    with self.torch.inference_mode():
      for rows in batches:
        ids, mask = padded(tokens, rows)
        out = self.model(self.torch.from_numpy(ids), self.torch.from_numpy(mask))
        logits[rows] = out.numpy()
    return logits


def export_onnx(model_dir, folder):
  """ort-fp32 and ort-int8 graphs of the model in `model_dir`, cached."""
  import onnxruntime
  from onnxruntime.quantization import QuantType, quantize_dynamic
  from onnxruntime.transformers.optimizer import optimize_model
  folder = pathlib.Path(folder)
  stamp = (pathlib.Path(model_dir) / "hf_weights.npz").stat().st_mtime_ns
  done = folder / f"done-{stamp}-{onnxruntime.__version__}"
  graphs = {"ort-fp32": folder / "model-opt.onnx",
            "ort-int8": folder / "model-opt-int8.onnx"}
  if done.exists():
    return graphs
  import warnings

  import onnx
  import torch
  for stale in folder.glob("done-*"):  # another export's: the graphs change
    stale.unlink()
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  warnings.filterwarnings("ignore", module="torch.onnx")
  warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
  folder.mkdir(parents=True, exist_ok=True)
  # The eager attention exports as the MatMul/Softmax pattern that the
  # optimizer fuses into one Attention operator.
  scorer = torch_scorer(model_dir, attention="eager")
  ids = torch.ones((2, 16), dtype=torch.int64)
  raw = folder / "model.onnx"
  torch.onnx.export(
      scorer, (ids, torch.ones_like(ids)), str(raw),
      input_names=["input_ids", "attention_mask"], output_names=["logit"],
      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "logit": {0: "batch"}},
      opset_version=17, dynamo=False)
  config = scorer.bert.config
  optimized = optimize_model(str(raw), model_type="bert",
                             num_heads=config.num_attention_heads,
                             hidden_size=config.hidden_size)
  optimized.save_model_to_file(str(graphs["ort-fp32"]))
  # The fused contrib operators (Attention, SkipLayerNorm) have no shape
  # inference: their outputs are float32.
  quantize_dynamic(str(graphs["ort-fp32"]), str(graphs["ort-int8"]),
                   weight_type=QuantType.QInt8, per_channel=False,
                   reduce_range=False,
                   extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
  done.write_text(json.dumps(optimized.get_fused_operator_statistics()))
  return graphs


class OnnxContender:

  def __init__(self, graph):
    import onnxruntime
    self.ort = onnxruntime
    self.graph = str(graph)
    self.session = None
    self.info = {"onnxruntime": onnxruntime.__version__,
                 "graph_bytes": pathlib.Path(graph).stat().st_size,
                 # export_onnx's marker (one: it removes older ones)
                 "fused": json.loads(next(
                     pathlib.Path(graph).parent.glob("done-*")).read_text())}

  def configure(self, threads):
    options = self.ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (
        self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    self.session = self.ort.InferenceSession(
        self.graph, options, providers=["CPUExecutionProvider"])

  def warm_up(self, tokens):
    start = time.perf_counter()
    self.configure(2)
    self.score(tokens, [np.arange(min(4, len(tokens)))])
    return time.perf_counter() - start

  def score(self, tokens, batches):
    logits = np.zeros(len(tokens), np.float32)
    for rows in batches:
      ids, mask = padded(tokens, rows)
      logits[rows] = self.session.run(
          None, {"input_ids": ids, "attention_mask": mask})[0]
    return logits


class OursContender:
  """The model handler as the pipeline calls it, with its defaults."""

  def __init__(self, model_dir):
    from pipeline.model_handler import TokenIdsModelHandler
    card = read_card(model_dir)
    self.handler = TokenIdsModelHandler(
        str(pathlib.Path(model_dir) / contract.SAVED_MODEL_DIR),
        signatures={"bfloat16": card.classify_signature("bfloat16")},
        precision="bfloat16",
        model_fingerprint=card.model_fingerprint,
        max_batch_size=OURS_BATCH)
    self.model = None
    import tensorflow as tf
    self.info = {"tensorflow": tf.__version__}

  def warm_up(self, tokens):
    start = time.perf_counter()
    self.model = self.handler.load_model()
    self.score(tokens, [np.arange(min(2, len(tokens)))])
    return time.perf_counter() - start

  def configure(self, threads):
    del threads  # TensorFlow sets its pools once per process; default kept.

  def batches(self, tokens, batch):
    del batch
    # The pipeline's default: sorted waves, then Beam's batching.
    return make_batches([len(t) for t in tokens], batch=OURS_BATCH,
                        mode="waves", wave=PIPELINE_DEFAULTS["sort_wave_size"])

  def score(self, tokens, batches):
    logits = np.zeros(len(tokens), np.float32)
    for rows in batches:
      results = self.handler.run_inference(
          [{"id": int(r), "tokens": tokens[r]} for r in rows], self.model)
      for r, result in zip(rows, results):
        p = float(np.clip(result.inference["probability"], 1e-7, 1 - 1e-7))
        logits[r] = np.log(p / (1 - p))
    return logits


def make_peer(kind, model_dir, graphs_dir):
  """A peer contender; `model_dir` holds hf_weights.npz."""
  if kind.startswith("torch"):
    return TorchContender(model_dir, compiled=kind == "torch-compile",
                          bfloat16=kind != "torch-fp32")
  return OnnxContender(export_onnx(model_dir, graphs_dir)[kind])


if __name__ == "__main__":  # a part of other scripts, not a benchmark
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.parse_args()
  parser.error("not a benchmark of its own: a part of benchmarks/peers.py")
