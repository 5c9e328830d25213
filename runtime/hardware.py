"""Which precision a process should compute in, from what its hardware does.

bfloat16 pays only where the CPU computes it natively (AVX-512 BF16 or AMX);
elsewhere TensorFlow emulates it and float32 is faster. On GPUs float32 stays
the choice until a GPU run has measured another.
"""
import functools
from typing import Iterable, Optional, Tuple

AUTO = "auto"
FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
FLOAT16 = "float16"
# CPU flags (as /proc/cpuinfo spells them) that mean native bfloat16 math.
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
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
  if has_gpu:
    choice, why = FLOAT32, "auto: GPU (float32 until a GPU run measures otherwise)"
  elif native and BFLOAT16 in available:
    return BFLOAT16, f"auto: the CPU computes bfloat16 natively ({flag})"
  elif native:
    choice, why = FLOAT32, "auto: the model carries no bfloat16 copy"
  else:
    choice, why = FLOAT32, ("auto: the CPU has no native bfloat16 (no AVX-512 "
                            "BF16 or AMX)")
  if choice not in available and available:
    # e.g. a TF Hub-encoder model exported in its training precision only
    only = sorted(available)[0]
    return only, f"auto: the model carries {only} only"
  return choice, why
