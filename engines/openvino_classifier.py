"""OpenVINO: the engine of a model's float32 copy (and of the int8 copies of
models made before 2026-12-08), for both halves.

Training converts the SavedModel's float32 classify signature to OpenVINO's
format as it is (`train.export.float32_copy`); scoring workers compile a
copy once per process and call it from any of their threads. Nothing here imports
OpenVINO until a function is called, so commands that never touch the copy
never load it.
"""
import os
import tempfile
import threading
from typing import Dict, Optional

import numpy as np

from schemas import model_dir as contract

RUNTIME_NAME = contract.OPENVINO
DEVICE = "CPU"


def version() -> str:
  """The installed OpenVINO release, e.g. 2026.4.1."""
  from importlib import metadata
  return metadata.version("openvino")


def convert_signature(saved_model_dir: str, signature: str, module=None):
  """The SavedModel's classify signature as an OpenVINO model (float32);
  `module`: the SavedModel already loaded, where the caller has it."""
  import openvino as ov
  import tensorflow as tf

  from runtime import text_ops
  if module is None:
    text_ops.register_text_ops()  # the SavedModel's tokenizer ops
    module = tf.saved_model.load(saved_model_dir)
  model = ov.convert_model(module.signatures[signature])
  # The converted model's weights point into TensorFlow's tensors, which
  # go when `module` does: written out and read back, they are its own.
  with tempfile.TemporaryDirectory(prefix="reviewscore-convert-") as tmp:
    xml = os.path.join(tmp, "model.xml")
    save(model, xml)
    del model, module
    # Read into memory, not mapped: the files go with the folder.
    model = ov.Core().read_model(xml, config={"ENABLE_MMAP": False})
  # Outputs by the signature's names, whatever names conversion gave them.
  for output in model.outputs:
    names = output.get_names()
    wanted = [n for n in names if n in _CLASSIFY_OUTPUTS]
    if wanted:
      output.set_names({wanted[0]})
  return model


_CLASSIFY_OUTPUTS = (contract.OUTPUT_LOGITS, contract.OUTPUT_PROBABILITY,
                     contract.OUTPUT_PROBABILITIES, contract.OUTPUT_LABEL_ID)


def save(model, xml_path: str) -> None:
  """Writes model.xml + model.bin, weights as they are (no float16 cast).

  OpenVINO numbers the nodes it makes with a counter that runs on through
  the process: the nodes are renamed by their place in the graph, so the
  same model writes the same bytes however many were made before it.
  Inputs and outputs keep their names (callers bind by them).
  """
  import openvino as ov
  for index, op in enumerate(model.get_ordered_ops()):
    if op.get_type_name() not in ("Parameter", "Result"):
      op.set_friendly_name(f"{op.get_type_name()}_{index}")
  ov.save_model(model, xml_path, compress_to_fp16=False)


# float32 wherever the model is not int8: the same numbers on every CPU
# (OpenVINO would otherwise compute in bfloat16 where the CPU has it).
COMPILE_OPTIONS = {"INFERENCE_PRECISION_HINT": "f32",
                   "PERFORMANCE_HINT": "LATENCY"}


class Classifier:
  """A compiled classify model: token ids and mask in, the signature's
  outputs out. One compiled model per process, one infer request per thread
  (a request is not safe to share between threads)."""

  def __init__(self, model):
    import openvino as ov
    core = ov.Core()
    if isinstance(model, (str, os.PathLike)):
      model = core.read_model(os.fspath(model))
    self.compiled = core.compile_model(model, DEVICE, COMPILE_OPTIONS)
    self._outputs = [(port, _name_of(port)) for port in self.compiled.outputs]
    self._local = threading.local()

  def _request(self):
    request = getattr(self._local, "request", None)
    if request is None:
      request = self._local.request = self.compiled.create_infer_request()
    return request

  def classify(self, word_ids: np.ndarray, mask: np.ndarray
               ) -> Dict[str, np.ndarray]:
    request = self._request()
    results = request.infer({contract.TOKEN_IDS: np.asarray(word_ids, np.int32),
                             contract.TOKEN_MASK: np.asarray(mask, np.int32)})
    return {name: np.array(results[port]) for port, name in self._outputs
            if name}


def _name_of(port) -> Optional[str]:
  names = port.get_names()
  for name in _CLASSIFY_OUTPUTS:
    if name in names:
      return name
  return None
