"""Which precision a process should compute in, from what its hardware does.

On CPUs, by what docs/engines.md measured side by side: bfloat16 where the
CPU computes it natively (AVX-512 BF16, AMX), elsewhere TensorFlow emulates
it; a model's int8 copy with 7-bit weights (ONNX Runtime's, what training
makes) on every other x86 CPU with AVX2, VNNI or not: its pair sums cannot
saturate, so it beats float32 there, but native bfloat16 beats it. An 8-bit
copy (OpenVINO's, in models made before 2026-12-08) pays only where the CPU
has int8 dot products (VNNI, AMX), and there it beats bfloat16 too. On GPUs
float32 (TensorFlow) stays the choice until a GPU run has measured another.
"""
import functools
import glob
import os
from typing import Iterable, Optional, Tuple

from schemas.model_dir import AUTO, BFLOAT16, FLOAT16, FLOAT32, INT8  # noqa: F401

# CPU flags (as /proc/cpuinfo spells them) that mean native bfloat16 math.
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
# CPU flags that mean int8 dot products in one instruction (u8 x s8 -> s32).
INT8_DOT_PRODUCT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
# The least an x86 CPU needs for ONNX Runtime's int8 kernels to beat its
# float32 ones (u8 x s8 pairs summed in 16 bits, `vpmaddubsw`).
INT8_WITHOUT_VNNI_FLAG = "avx2"
CPUINFO = "/proc/cpuinfo"


@functools.lru_cache(maxsize=None)
def cpu_flags(cpuinfo: str = CPUINFO) -> frozenset:
  """The CPU's feature flags; empty where the OS does not list them."""
  try:
    with open(cpuinfo, encoding="utf-8", errors="replace") as f:
      for line in f:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def nvidia_device_present() -> bool:
  """Whether the kernel shows an NVIDIA GPU (a device node or its driver's
  listing): where none is, TensorFlow sees no GPU, so a worker that will
  not compute with TensorFlow need not load it to ask."""
  return os.path.exists("/dev/nvidia0") or bool(
      glob.glob("/proc/driver/nvidia/gpus/*"))


def native_bfloat16(flags: Optional[Iterable[str]] = None) -> Tuple[bool, str]:
  """(whether the CPU computes bfloat16 natively, the flag that says so)."""
  flags = cpu_flags() if flags is None else frozenset(flags)
  found = [f for f in NATIVE_BFLOAT16_FLAGS if f in flags]
  return bool(found), ", ".join(found)


def int8_dot_product(flags: Optional[Iterable[str]] = None) -> Tuple[bool, str]:
  """(whether the CPU has int8 dot-product instructions, the flags)."""
  flags = cpu_flags() if flags is None else frozenset(flags)
  found = [f for f in INT8_DOT_PRODUCT_FLAGS if f in flags]
  return bool(found), ", ".join(found)


def choose_precision(requested: str, *, available: Iterable[str] = (
    FLOAT32, BFLOAT16), has_gpu: bool = False,
                     flags: Optional[Iterable[str]] = None,
                     int8_pays_without_vnni: bool = False) -> Tuple[str, str]:
  """(precision to compute in, why) for `requested` = auto or a precision.

  `available` is what the model carries (scoring) or what training can do;
  `int8_pays_without_vnni`: its int8 copy has 7-bit weights (ONNX
  Runtime's). An explicit request is returned as it is: checking it against
  the model is the caller's business, with the caller's error message.
  """
  if requested != AUTO:
    return requested, "asked for"
  available = set(available)
  flags = cpu_flags() if flags is None else frozenset(flags)
  native, flag = native_bfloat16(flags)
  vnni, vnni_flags = int8_dot_product(flags)
  avx2 = INT8_WITHOUT_VNNI_FLAG in flags
  if has_gpu:
    choice, why = FLOAT32, "auto: GPU (float32 until a GPU run measures otherwise)"
  elif INT8 in available and vnni and not int8_pays_without_vnni:
    return INT8, (f"auto: the CPU has int8 dot-product instructions "
                  f"({vnni_flags}) and the model carries an 8-bit int8 copy")
  elif native and BFLOAT16 in available:
    return BFLOAT16, f"auto: the CPU computes bfloat16 natively ({flag})"
  elif INT8 in available and vnni:
    return INT8, (f"auto: the CPU has int8 dot-product instructions "
                  f"({vnni_flags}) and no native bfloat16; the model carries "
                  "an int8 copy")
  elif INT8 in available and int8_pays_without_vnni and avx2:
    return INT8, ("auto: the model's int8 copy has 7-bit weights, faster "
                  "than float32 on any x86 CPU with AVX2 (this one has "
                  "neither VNNI nor native bfloat16)")
  elif native:
    choice, why = FLOAT32, "auto: the model carries no bfloat16 copy"
  elif INT8 in available and int8_pays_without_vnni:
    choice, why = FLOAT32, ("auto: no x86 CPU with AVX2 (the int8 copy's "
                            "speed is measured there only), no native "
                            "bfloat16")
  elif INT8 in available:
    choice, why = FLOAT32, ("auto: the CPU has neither int8 dot-product "
                            "instructions (VNNI, AMX) nor native bfloat16 "
                            "(AVX-512 BF16, AMX), and the model's int8 copy "
                            "has 8-bit weights (slower than float32 here)")
  else:
    choice, why = FLOAT32, ("auto: the CPU has no native bfloat16 (no AVX-512 "
                            "BF16 or AMX)")
  if choice not in available and available:
    # e.g. a TF Hub-encoder model exported in its training precision only
    only = sorted(available)[0]
    return only, f"auto: the model carries {only} only"
  return choice, why
