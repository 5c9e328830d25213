"""Which precision a process should compute in, from what its hardware does.

int8 (a model's OpenVINO copy) pays most where the CPU has int8 dot-product
instructions (VNNI, AMX); bfloat16 pays only where the CPU computes it
natively (AVX-512 BF16 or AMX), elsewhere TensorFlow emulates it and float32
is faster. On GPUs float32 (TensorFlow) stays the choice until a GPU run has
measured another. docs/performance.md has the measurements behind the order.
"""
import functools
from typing import Iterable, Optional, Tuple

AUTO = "auto"
FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
FLOAT16 = "float16"
INT8 = "int8"
# CPU flags (as /proc/cpuinfo spells them) that mean native bfloat16 math.
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
# CPU flags that mean int8 dot products in one instruction (u8 x s8 -> s32).
INT8_DOT_PRODUCT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
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
                     flags: Optional[Iterable[str]] = None) -> Tuple[str, str]:
  """(precision to compute in, why) for `requested` = auto or a precision.

  `available` is what the model carries (scoring) or what training can do.
  An explicit request is returned as it is: checking it against the model is
  the caller's business, with the caller's error message.
  """
  if requested != AUTO:
    return requested, "asked for"
  available = set(available)
  native, flag = native_bfloat16(flags)
  vnni, vnni_flags = int8_dot_product(flags)
  if has_gpu:
    choice, why = FLOAT32, "auto: GPU (float32 until a GPU run measures otherwise)"
  elif vnni and INT8 in available:
    return INT8, (f"auto: the CPU has int8 dot-product instructions "
                  f"({vnni_flags}) and the model carries an int8 copy")
  elif native and BFLOAT16 in available:
    return BFLOAT16, f"auto: the CPU computes bfloat16 natively ({flag})"
  elif native:
    choice, why = FLOAT32, "auto: the model carries no bfloat16 copy"
  elif INT8 in available:
    choice, why = FLOAT32, ("auto: the CPU has neither int8 dot-product "
                            "instructions (VNNI, AMX) nor native bfloat16 "
                            "(AVX-512 BF16, AMX)")
  else:
    choice, why = FLOAT32, ("auto: the CPU has no native bfloat16 (no AVX-512 "
                            "BF16 or AMX)")
  if choice not in available and available:
    # e.g. a TF Hub-encoder model exported in its training precision only
    only = sorted(available)[0]
    return only, f"auto: the model carries {only} only"
  return choice, why
