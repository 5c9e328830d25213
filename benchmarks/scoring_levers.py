"""The levers throughput.py measures on the model handler (b), each alone.

Batching and precision are arguments of scoring_paths.run_handler; here are
the rest: the old power-of-two bucket edges, a second pass over the same
handler (XLA with its shapes compiled), XLA's jit_compile swapped in for the
model call, tokenization overlapped with classification, and TensorFlow's
thread settings, which it reads once per process, so each runs in a fresh
one (`throughput.py --threads-worker`). A part of benchmarks/throughput.py;
not run on its own.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks.processes import THROUGHPUT, WORKER_TIMEOUT  # noqa: E402
from benchmarks.reviews_and_models import read_tokens, write_tokens  # noqa: E402
from benchmarks.scoring_paths import (BATCH, make_batches,  # noqa: E402
                                      run_handler, tokenize_all)
from schemas import model_dir as contract  # noqa: E402

# The pipeline's earlier default edges; its default now is every 16 tokens
# up to the model's length (pipeline.settings.default_bucket_boundaries).
POWER_OF_TWO_BUCKETS = (16, 32, 64, 128, 256, 512)


def rerun(result, tokens, mode="sorted"):
  """Times run_inference again with the handler and model of `result`."""
  handler, model = result["handler"], result["model"]
  records = [{"id": i, "tokens": t} for i, t in enumerate(tokens)]
  batches = make_batches([len(t) for t in tokens], mode=mode, boundaries=None)
  start = time.perf_counter()
  for rows in batches:
    list(handler.run_inference([records[r] for r in rows], model))
  return time.perf_counter() - start


def xla_wrap(multiple):
  """Swaps the handler's model call for an XLA-compiled one (a lever).

  Lengths are padded up to a multiple of `multiple` so XLA compiles a few
  shapes rather than one per batch; each new shape compiles on first use
  (counted in the timing, as a pipeline would pay it).
  """
  def wrap(handler, model):
    import tensorflow as tf
    fn = model.signatures[handler._signature]
    compiled = tf.function(lambda ids, mask: fn(input_word_ids=ids,
                                                input_mask=mask),
                           jit_compile=True)

    def classify(model, word_ids, mask):
      length = word_ids.shape[1]
      target = -(-length // multiple) * multiple
      if target != length:
        pad = [(0, 0), (0, target - length)]
        word_ids, mask = np.pad(word_ids, pad), np.pad(mask, pad)
      out = compiled(tf.constant(word_ids, tf.int32),
                     tf.constant(mask, tf.int32))
      return {name: value.numpy() for name, value in out.items()}
    # The handler's own seam (the model object is shared process-wide).
    handler._classify = classify
  return wrap


def run_overlap(model_dir, texts, *, precision="bfloat16", batch=BATCH,
                chunk=256, overlap=True):
  """Tokenize + classify end to end, tokenizing chunk k+1 while chunk k runs."""
  from pipeline.model_handler import pad_batch
  from pipeline.scoring_model import acquire_model
  model = acquire_model(str(pathlib.Path(model_dir) / contract.SAVED_MODEL_DIR))
  signature = contract.classify_signature_for(precision)
  model.classify(signature, *pad_batch([np.array([101, 102], np.int32)]))
  chunks = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]

  def tokenize(chunk_texts):
    return tokenize_all(model, chunk_texts)[0]

  def classify(tokens):
    lengths = [len(t) for t in tokens]
    for rows in make_batches(lengths, batch=batch, mode="sorted",
                             boundaries=None):
      model.classify(signature, *pad_batch([tokens[r] for r in rows]))

  start = time.perf_counter()
  if not overlap:
    for c in chunks:
      classify(tokenize(c))
  else:
    result = {}
    def worker(index):
      result[index] = tokenize(chunks[index])
    thread = threading.Thread(target=worker, args=(0,))
    thread.start()
    for index in range(len(chunks)):
      thread.join()
      tokens = result.pop(index)
      if index + 1 < len(chunks):
        thread = threading.Thread(target=worker, args=(index + 1,))
        thread.start()
      classify(tokens)
  return {"seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------
# Thread-settings lever (TensorFlow reads them once per process)


def run_threads_worker(model_dir, inputs, out, intra, inter, precision):
  import tensorflow as tf
  tf.config.threading.set_intra_op_parallelism_threads(int(intra))
  tf.config.threading.set_inter_op_parallelism_threads(int(inter))
  tokens = read_tokens(inputs)
  r = run_handler(model_dir, tokens, precision=precision)
  pathlib.Path(out).write_text(json.dumps({"seconds": r["seconds"]}))


def run_threads(model_dir, tokens, intra, inter, precision="bfloat16"):
  with tempfile.TemporaryDirectory() as tmp:
    inputs = pathlib.Path(tmp) / "tokens.npz"
    write_tokens(inputs, tokens)
    out = pathlib.Path(tmp) / "out.json"
    done = subprocess.run(
        [sys.executable, str(THROUGHPUT), "--threads-worker", str(model_dir),
         str(inputs), str(out), str(intra), str(inter), precision],
        capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    if done.returncode != 0:
      raise RuntimeError(done.stderr[-2000:])
    return json.loads(out.read_text())


if __name__ == "__main__":  # a part of other scripts, not a benchmark
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.parse_args()
  parser.error("not a benchmark of its own: a part of benchmarks/throughput.py")
