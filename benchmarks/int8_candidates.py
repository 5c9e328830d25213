"""The ways a model's float32 classifier can run in int8 on CPUs, each made
here from the SavedModel, for benchmarks/int8_runtime.py to measure side by
side with what the product ships (the model's own copies).

    python benchmarks/int8_candidates.py --model M --data-dir D --out DIR

  onnxruntime-int8          what training makes: ONNX Runtime dynamic int8,
                            7-bit weights per channel (the model's copy
                            where it has one, made here otherwise), from
                            the graph `engines.onnx_export` writes
  onnxruntime-float32-tf2onnx, onnxruntime-int8-tf2onnx
                            the same from tf2onnx's op-by-op conversion
                            (unfused)
  onnxruntime-int8-float-attention  the int8 copy's quantization with the
                            fused Attention left in float32
  onnxruntime-int8-8bit     the same with the full 8-bit weight range (what
                            saturates on AVX2 without VNNI)
  onnxruntime-int8-per-tensor  7-bit weights, one scale per matrix
  openvino-int8-nncf        NNCF post-training, transformer preset (8-bit
                            weights, SmoothQuant): the copy models carried
                            before 2026-12-08
  openvino-int8-nncf-overflow-fix  the same with NNCF's overflow fix (7-bit
                            weights on every matmul)
  openvino-int8-nncf-overflow-fix-no-smoothquant  and without SmoothQuant
  openvino-int8-dynamic     OpenVINO's own dynamic quantization: int8
                            weights (NNCF compress_weights), activations
                            quantized per group of 32 as it runs

NNCF calibrates on `CALIBRATION_REVIEWS` training reviews of the model's
data, given as token ids.
"""
import os
import pathlib
import sys
from typing import Callable, Dict, Sequence

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from engines import onnx_bert, onnx_classifier, onnx_export
from engines import openvino_classifier as openvino
from schemas import model_dir as contract

CALIBRATION_REVIEWS = 300


def _onnx_variant(float32_onnx: str, out: str, **quantization) -> str:
  from onnxruntime.quantization import QuantType, quantize_dynamic
  if not os.path.exists(out):
    import onnx
    quantize_dynamic(float32_onnx, out, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                     **quantization)
  return out


def _nncf(float32_model, token_ids: Sequence[np.ndarray], out_xml: str, *,
          overflow_fix: bool, smooth_quant: bool):
  import nncf
  from nncf.quantization.advanced_parameters import (
      AdvancedQuantizationParameters, AdvancedSmoothQuantParameters,
      OverflowFix)
  if os.path.exists(out_xml):
    return out_xml
  items = [{contract.TOKEN_IDS: np.asarray(ids, np.int32)[np.newaxis, :],
            contract.TOKEN_MASK: np.ones((1, len(ids)), np.int32)}
           for ids in token_ids]
  advanced = AdvancedQuantizationParameters(
      overflow_fix=OverflowFix.ENABLE if overflow_fix else OverflowFix.DISABLE,
      smooth_quant_alphas=AdvancedSmoothQuantParameters() if smooth_quant
      else AdvancedSmoothQuantParameters(matmul=-1))
  quantized = nncf.quantize(float32_model, nncf.Dataset(items),
                            model_type=nncf.ModelType.TRANSFORMER,
                            subset_size=len(items),
                            advanced_parameters=advanced)
  openvino.save(quantized, out_xml)
  return out_xml


class _OpenVinoDynamic:
  """int8 weights, activations quantized as it runs (OpenVINO's CPU plugin
  does this for compressed weights given a group size)."""

  def __init__(self, float32_model, out_xml: str):
    import nncf
    import openvino as ov
    if not os.path.exists(out_xml):
      compressed = nncf.compress_weights(
          float32_model, mode=nncf.CompressWeightsMode.INT8_ASYM)
      openvino.save(compressed, out_xml)
    core = ov.Core()
    self.compiled = core.compile_model(core.read_model(out_xml), "CPU", {
        **openvino.COMPILE_OPTIONS, "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"})
    self._request = self.compiled.create_infer_request()
    self._names = {port: next(iter(port.get_names()), None)
                   for port in self.compiled.outputs}

  def classify(self, word_ids, mask):
    results = self._request.infer({contract.TOKEN_IDS: word_ids,
                                   contract.TOKEN_MASK: mask})
    return {name: np.array(results[port])
            for port, name in self._names.items() if name}


def candidates(model_dir: pathlib.Path, card: contract.ModelCard, module,
               calibration_ids: Sequence[np.ndarray], folder: pathlib.Path,
               log: Callable[[str], None] = print
               ) -> Dict[str, Callable]:
  """name -> classify(ids, mask) of every int8 candidate (and of the ONNX
  float32 graph they start from), made into `folder` (reused there)."""
  folder.mkdir(parents=True, exist_ok=True)
  signature = card.classify_signature("float32")
  float32_onnx = str(folder / "float32.onnx")
  if not os.path.exists(float32_onnx):
    log("  writing the float32 classifier as ONNX")
    onnx_export.convert_signature(
        module, signature, float32_onnx, architecture=onnx_bert.Architecture.of(
            card.encoder, card.pooling, card.threshold))
  unfused_onnx = str(folder / "float32-tf2onnx.onnx")
  if not os.path.exists(unfused_onnx):
    log("  converting the float32 classifier with tf2onnx")
    onnx_export.convert_signature(module, signature, unfused_onnx)
  found = {"onnxruntime-float32":
           onnx_classifier.Classifier(float32_onnx).classify,
           "onnxruntime-float32-tf2onnx":
           onnx_classifier.Classifier(unfused_onnx).classify}
  own = card.copies.get(contract.INT8)
  if own is not None and own.engine == contract.ONNXRUNTIME:
    int8_path = str(model_dir / own.folder / own.model_file)
  else:
    int8_path = str(folder / "int8.onnx")
    if not os.path.exists(int8_path):
      onnx_export.quantize(float32_onnx, int8_path)
  found["onnxruntime-int8"] = onnx_classifier.Classifier(int8_path).classify
  unfused_int8 = str(folder / "int8-tf2onnx.onnx")
  if not os.path.exists(unfused_int8):
    onnx_export.quantize(unfused_onnx, unfused_int8)
  found["onnxruntime-int8-tf2onnx"] = onnx_classifier.Classifier(
      unfused_int8).classify
  found["onnxruntime-int8-8bit"] = onnx_classifier.Classifier(_onnx_variant(
      float32_onnx, str(folder / "int8-8bit.onnx"), per_channel=True,
      reduce_range=False)).classify
  found["onnxruntime-int8-per-tensor"] = onnx_classifier.Classifier(
      _onnx_variant(float32_onnx, str(folder / "int8-per-tensor.onnx"),
                    per_channel=False, reduce_range=True)).classify
  found["onnxruntime-int8-float-attention"] = onnx_classifier.Classifier(
      _onnx_variant(float32_onnx, str(folder / "int8-float-attention.onnx"),
                    per_channel=True, reduce_range=True,
                    op_types_to_quantize=["MatMul"])).classify
  try:
    import nncf  # noqa: F401
  except ImportError:
    log("  NNCF not installed: no OpenVINO int8 candidates "
        "(bash scripts/bootstrap.sh benchmark)")
    return found
  float32_model = openvino.convert_signature(None, signature, module=module)
  for name, overflow_fix, smooth_quant in (
      ("openvino-int8-nncf", False, True),
      ("openvino-int8-nncf-overflow-fix", True, True),
      ("openvino-int8-nncf-overflow-fix-no-smoothquant", True, False)):
    log(f"  {name}: quantizing on {len(calibration_ids)} training reviews")
    xml = _nncf(float32_model.clone(), calibration_ids, str(folder / f"{name}.xml"),
                overflow_fix=overflow_fix, smooth_quant=smooth_quant)
    found[name] = openvino.Classifier(xml).classify
  found["openvino-int8-dynamic"] = _OpenVinoDynamic(
      float32_model.clone(), str(folder / "openvino-int8-dynamic.xml")).classify
  return found


def main(argv=None):
  import argparse

  from pipeline.scoring_model import acquire_model
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", type=pathlib.Path, required=True)
  parser.add_argument("--out", type=pathlib.Path, required=True,
                      help="folder the candidates are written to")
  parser.add_argument("--data-dir", type=pathlib.Path, required=True,
                      help="the model's data (train.parquet: calibration)")
  args = parser.parse_args(argv)
  from benchmarks.int8_runtime import calibration_token_ids
  from engines.model_dir import load_model_card
  card = load_model_card(str(args.model))
  saved = acquire_model(str(args.model / contract.SAVED_MODEL_DIR))
  made = candidates(args.model, card, saved.module, calibration_token_ids(
      saved, args.data_dir, CALIBRATION_REVIEWS), args.out)
  print("\n".join(sorted(made)))


if __name__ == "__main__":
  main()
