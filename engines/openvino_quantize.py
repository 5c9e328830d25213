"""Post-training int8 quantization of a classify signature, by NNCF.

The float32 signature is converted to OpenVINO and NNCF sets the int8
ranges from calibration reviews, given as token ids, one item per review at
its own length (no padding). The same model and reviews give the same
files, byte for byte.
"""
from typing import Sequence

import numpy as np

from engines import openvino_classifier as engine
from schemas import model_dir as contract

# NNCF's preset for BERT-like models (SmoothQuant on the matmuls, GELU and
# softmax kept in float), as `nncf.ModelType` names it.
MODEL_TYPE = "TRANSFORMER"


def quantizer_version() -> str:
  from importlib import metadata
  return f"nncf {metadata.version('nncf')}"


def quantize(saved_model: str, signature: str,
             token_ids: Sequence[np.ndarray], out_xml: str) -> None:
  """Writes the int8 model to `out_xml` and its weights beside it."""
  import nncf
  model = engine.convert_signature(saved_model, signature)
  items = [{contract.TOKEN_IDS: np.asarray(ids, np.int32)[np.newaxis, :],
            contract.TOKEN_MASK: np.ones((1, len(ids)), np.int32)}
           for ids in token_ids]
  quantized = nncf.quantize(model, nncf.Dataset(items),
                            model_type=getattr(nncf.ModelType, MODEL_TYPE),
                            subset_size=len(items))
  engine.save(quantized, out_xml)
