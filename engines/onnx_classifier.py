"""ONNX Runtime: the engine of a model's int8 copy, on scoring workers.

The copy is the SavedModel's float32 classify signature as an ONNX graph,
its matmul weights quantized to int8 in a 7-bit range, per output channel,
and its activations quantized per batch as it runs (dynamic int8:
`engines.onnx_export` makes it). With 7-bit weights the u8 x s8 products
of a pair fit 16 bits, so AVX2's `vpmaddubsw` cannot saturate: every x86
CPU (AVX2, AVX-512 VNNI, AMX) computes the same integer sums, and the
accuracy the guard measured where the copy was made holds on every worker.

Only `onnxruntime` is needed here; nothing imports it until a classifier
is made.
"""
import os
from typing import Dict

import numpy as np

from schemas import model_dir as contract

RUNTIME_NAME = contract.ONNXRUNTIME


def version() -> str:
  """The installed ONNX Runtime release, e.g. 1.31.1."""
  from importlib import metadata
  return metadata.version("onnxruntime")


def usable_cores() -> int:
  """The cores this process may run on (its affinity, not the host's)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def session_options():
  """Every graph optimization, and one intra-op thread per usable core:
  ONNX Runtime's default counts physical cores, one on a 2-vCPU machine
  whose vCPUs are hyperthreads of one core."""
  import onnxruntime as ort
  options = ort.SessionOptions()
  options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  options.intra_op_num_threads = usable_cores()
  options.inter_op_num_threads = 1
  options.log_severity_level = 3  # errors only: its warnings are about graphs
  return options


class Classifier:
  """An ONNX classify graph: token ids and mask in, the signature's outputs
  out. One session per process; ONNX Runtime's `run` may be called from
  several threads at once."""

  def __init__(self, path: str):
    import onnxruntime as ort
    self.session = ort.InferenceSession(
        os.fspath(path), sess_options=session_options(),
        providers=["CPUExecutionProvider"])
    self._outputs = [o.name for o in self.session.get_outputs()]

  def classify(self, word_ids: np.ndarray, mask: np.ndarray
               ) -> Dict[str, np.ndarray]:
    results = self.session.run(
        self._outputs, {contract.TOKEN_IDS: np.asarray(word_ids, np.int32),
                        contract.TOKEN_MASK: np.asarray(mask, np.int32)})
    return dict(zip(self._outputs, results, strict=True))
