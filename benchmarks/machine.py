"""The machine a benchmark ran on, recorded beside every raw result.

    python benchmarks/machine.py [--no-peaks]    # prints the description

Every benchmark that writes a result to benchmarks/results/ puts
`"machine": machine.describe()` in it: the CPU as /proc/cpuinfo names it
(model name, vendor, family, model, stepping), its cores, the flags that
decide speed (AVX2, FMA, AVX-512, VNNI, BF16, AMX) and what they mean for
the precisions (native bfloat16, int8 dot products: runtime.hardware's
reading, the one `--precision auto` makes), the platform, Python and the
versions of the engines and libraries installed (read from their metadata,
nothing imported), the date, and TensorFlow's matmul peak of each precision:
the best of PEAK_REPS tf.matmul of PEAK_SIZE² in float32 and in bfloat16,
measured in a fresh process so that what the benchmark has loaded or
configured (threads, models) does not count. Results from different CPUs
are never compared: `cpu_slug` names the CPU class for file names.

The matmul peak functions here are the only ones; benchmarks that need a
peak of their own (4096², XLA, PyTorch) call them with their sizes.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from runtime.hardware import (CPUINFO, INT8_DOT_PRODUCT_FLAGS,  # noqa: E402
                              NATIVE_BFLOAT16_FLAGS, cpu_flags)

# The CPU flags that decide how fast the engines run (as /proc/cpuinfo
# spells them): wide vectors and fused multiply-add, then the int8
# dot-product and native-bfloat16 instructions runtime.hardware reads.
SPEED_FLAGS = tuple(dict.fromkeys(
    ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
     "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
    + NATIVE_BFLOAT16_FLAGS + INT8_DOT_PRODUCT_FLAGS))
# Distributions whose versions a result records (name in the result: the
# distribution's name), where installed.
PACKAGES = {"tensorflow": "tensorflow", "tensorflow_text": "tensorflow-text",
            "openvino": "openvino", "nncf": "nncf",
            "onnxruntime": "onnxruntime", "onnx": "onnx", "torch": "torch",
            "transformers": "transformers", "numpy": "numpy",
            "apache_beam": "apache-beam"}
# TensorFlow may be installed under another distribution name.
_ALTERNATIVES = {"tensorflow": ("tensorflow-cpu", "tensorflow-intel",
                                "tf-nightly")}
PEAK_SIZE = 2048
PEAK_REPS = 3
_CPUINFO_KEYS = {"model name": "cpu", "vendor_id": "vendor",
                 "cpu family": "cpu_family", "model": "cpu_model",
                 "stepping": "stepping"}


def _cpuinfo(path=CPUINFO) -> dict:
  """The first processor's model name, vendor, family, model, stepping."""
  found = {}
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = _CPUINFO_KEYS.get(key.strip())
        if key and key not in found:
          found[key] = value.strip()
        if not line.strip() and found:
          break  # the end of the first processor's block
  except OSError:
    pass
  return found


def versions(packages=None) -> dict:
  """{name: version} of the installed distributions among `packages`
  (default PACKAGES), from their metadata: nothing is imported."""
  from importlib import metadata
  out = {}
  for name, distribution in (packages or PACKAGES).items():
    for candidate in (distribution, *_ALTERNATIVES.get(name, ())):
      try:
        out[name] = metadata.version(candidate)
        break
      except metadata.PackageNotFoundError:
        continue
  return out


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def tf_matmul_peaks(n=PEAK_SIZE, reps=PEAK_REPS, xla=False) -> dict:
  """GFLOP/s of the best of `reps` tf.matmul of n×n in float32 and bfloat16
  in this process (each warmed up once), with `xla` also under XLA
  (`float32_xla`, `bfloat16_xla`)."""
  import tensorflow as tf
  out = {}
  for dtype in ("float32", "bfloat16"):
    for jit in ((False, True) if xla else (False,)):
      a = tf.cast(tf.random.normal([n, n]), dtype)
      b = tf.cast(tf.random.normal([n, n]), dtype)
      f = tf.function(lambda x, y: tf.matmul(x, y), jit_compile=jit)
      f(a, b).numpy()
      best = min(_timed(lambda: f(a, b).numpy()) for _ in range(reps))
      out[dtype + ("_xla" if jit else "")] = 2 * n ** 3 / best / 1e9
  return out


def native_bfloat16() -> bool:
  """Whether this CPU computes bfloat16 natively (AVX-512 BF16, AMX)."""
  flags = cpu_flags()
  return any(f in flags for f in NATIVE_BFLOAT16_FLAGS)


def torch_matmul_peaks(n=4096, reps=5) -> dict:
  """The same for torch.matmul, with PyTorch's threads as the caller set
  them (PyTorch benchmarks run in processes of their own)."""
  import torch
  out = {}
  for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
    if dtype == torch.bfloat16 and not native_bfloat16():
      continue  # emulated, one thread: minutes per product, and not a peak
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(reps))
    out[name] = 2 * n ** 3 / best / 1e9
  return out


def _peaks_in_fresh_process() -> dict:
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  done = subprocess.run([sys.executable, __file__, "--matmul-peaks"],
                        capture_output=True, text=True, env=env, timeout=600)
  if done.returncode != 0:
    raise RuntimeError("measuring the matmul peaks failed:\n"
                       + done.stderr[-3000:])
  return json.loads(done.stdout.strip().splitlines()[-1])


def describe(peaks: bool = True) -> dict:
  """This machine, as every raw result records it (see the module doc).

  Keys: cpu (model name), vendor, cpu_family, cpu_model, stepping (strings,
  as /proc/cpuinfo has them), cores (os.cpu_count()), cores_usable (this
  process's affinity), flags (the SPEED_FLAGS present), native_bfloat16,
  int8_dot_product, platform, python, versions, load_average (1, 5, 15
  min), date (UTC); with `peaks`, matmul_peaks_gflops ({float32, bfloat16})
  and matmul_peaks_measured (how).
  """
  info = _cpuinfo()
  flags = cpu_flags()
  try:
    usable = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    usable = os.cpu_count()
  try:
    load = [round(x, 2) for x in os.getloadavg()]
  except OSError:
    load = None
  described = {
      "cpu": info.get("cpu") or platform.processor() or platform.machine(),
      "vendor": info.get("vendor"),
      "cpu_family": info.get("cpu_family"),
      "cpu_model": info.get("cpu_model"),
      "stepping": info.get("stepping"),
      "cores": os.cpu_count(),
      "cores_usable": usable,
      "flags": sorted(f for f in SPEED_FLAGS if f in flags),
      "native_bfloat16": native_bfloat16(),
      "int8_dot_product": any(f in flags for f in INT8_DOT_PRODUCT_FLAGS),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "versions": versions(),
      "load_average": load,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
  }
  if peaks:
    described["matmul_peaks_gflops"] = _peaks_in_fresh_process()
    described["matmul_peaks_measured"] = (
        f"tf.matmul {PEAK_SIZE}x{PEAK_SIZE}, best of {PEAK_REPS}, "
        "in a fresh process")
  return described


def cpu_slug(info: dict) -> str:
  """A file-name-safe name of the CPU class: vendor, family, model (e.g.
  amd-family25-model1), from a description (describe(), or the older
  records int8_runtime.py wrote)."""
  vendor = (info.get("vendor") or "") + " " + (info.get("cpu") or "")
  vendor = ("amd" if "AMD" in vendor else
            "intel" if "Intel" in vendor else "cpu")
  if info.get("cpu_family") is None and info.get("cpu_model") is None:
    slug = f"{vendor}-{platform.machine()}"
  else:
    slug = f"{vendor}-family{info.get('cpu_family')}-model{info.get('cpu_model')}"
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", slug).lower()


def summary(info: dict) -> str:
  """One line for a benchmark's log."""
  line = (f"CPU: {info['cpu']} (family {info['cpu_family']}, model "
          f"{info['cpu_model']}), {info['cores']} cores, flags "
          f"{' '.join(info['flags']) or 'none of interest'}")
  if info.get("matmul_peaks_gflops"):
    line += "; TensorFlow matmul peaks (GFLOP/s): " + ", ".join(
        f"{k} {v:.0f}" for k, v in info["matmul_peaks_gflops"].items())
  return line


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--no-peaks", action="store_true",
                      help="leave out the matmul peaks (no TensorFlow)")
  parser.add_argument("--matmul-peaks", action="store_true",
                      help=argparse.SUPPRESS)  # describe()'s fresh process
  args = parser.parse_args(argv)
  if args.matmul_peaks:
    print(json.dumps(tf_matmul_peaks()))
    return 0
  print(json.dumps(describe(peaks=not args.no_peaks), indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
