"""Our side of throughput.py's comparison: the ways of scoring it times.

(a) the tutorial's way, `serving_default` on raw strings; (b) the model
handler alone, on our tokenize signature's ids in batches formed as the
pipeline forms them (make_batches, which peers.py and scale.py use too);
(c) the whole pipeline, Parquet to Parquet, and (c0) the same in a fresh
process with its peak memory (`throughput.py --scale-worker`). A part of
benchmarks/throughput.py; not run on its own.
"""
import argparse
import bisect
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks.processes import THROUGHPUT, tree_rss  # noqa: E402
from benchmarks.reviews_and_models import read_card  # noqa: E402
from schemas import model_dir as contract  # noqa: E402

BATCH = 32


def pipeline_buckets(seq_length):
  from pipeline.settings import default_bucket_boundaries
  return tuple(default_bucket_boundaries(seq_length))


# ----------------------------------------------------------------------------
# (a) the tutorial's way


def run_tutorial(model_dir, texts, batch=BATCH):
  import tensorflow as tf
  import tensorflow_text  # noqa: F401
  model = tf.saved_model.load(str(pathlib.Path(model_dir) / contract.SAVED_MODEL_DIR))
  serve = model.signatures[contract.SERVING_SIGNATURE]
  serve(text=tf.constant(texts[:batch]))  # first call traces; not timed
  labels, probs = [], []
  start = time.perf_counter()
  for i in range(0, len(texts), batch):
    out = serve(text=tf.constant(texts[i:i + batch]))
    labels.append(out["label_id"].numpy())
    probs.append(out["probability"].numpy())
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "labels": np.concatenate(labels),
          "probability": np.concatenate(probs)}


# ----------------------------------------------------------------------------
# (b) the model handler alone


def tokenize_all(model, texts, batch=64):
  """Our tokenize signature in the pipeline's tokenize batches; timed.

  `model`: what pipeline.model_handler.acquire_model returns."""
  tokens = []
  start = time.perf_counter()
  for i in range(0, len(texts), batch):
    ids, counts = model.tokenize(texts[i:i + batch])
    tokens.extend(np.ascontiguousarray(r[:int(c)], np.int32)
                  for r, c in zip(ids, counts))
  return tokens, time.perf_counter() - start


def make_batches(lengths, *, batch=BATCH, mode="beam", boundaries=None,
                 wave=None):
  """Row-index batches the way the pipeline would feed the handler.

  beam:   Beam's length bucketing (bisect_right on the boundaries, one buffer
          per bucket, a batch leaves when its buffer holds `batch`; leftovers
          at the end), arrival order within a bucket;
  waves:  the pipeline's SortByLengthInWaves (waves of up to `wave`, the
          first one batch), then cut in arrival order (one bundle);
  sorted: all reviews sorted by length, then cut (the peer's batching);
  none:   arrival order, no bucketing (dynamic padding to the batch's max).
  """
  lengths = np.asarray(lengths)

  def cut(order):
    order = np.asarray(order)
    return [order[i:i + batch] for i in range(0, len(order), batch)]

  if mode == "none":
    return cut(np.arange(len(lengths)))
  if mode == "sorted":
    return cut(np.argsort(lengths, kind="stable"))
  if mode == "waves":
    from apache_beam.transforms import window
    from pipeline.length_sort import SortByLengthInWaves
    dofn = SortByLengthInWaves(wave, first_wave=batch)
    dofn.start_bundle()
    in_global_window = window.GlobalWindow()
    order = [out["row"] for row, n in enumerate(lengths)
             for out in dofn.process({"row": row, "tokens": range(int(n))},
                                     in_global_window)]
    order += [value.value["row"] for value in dofn.finish_bundle()]
    return cut(order)
  buffers, out = {}, []
  for row, n in enumerate(lengths):
    key = bisect.bisect_right(list(boundaries), int(n))
    buffers.setdefault(key, []).append(row)
    if len(buffers[key]) == batch:
      out.append(np.asarray(buffers.pop(key)))
  out.extend(np.asarray(rows) for _, rows in sorted(buffers.items()))
  return out


def run_handler(model_dir, tokens, *, precision="bfloat16", batch=BATCH,
                mode="beam", boundaries=None, wrap=None,
                warmup=True):
  """Calls TokenIdsModelHandler.run_inference on prepared record batches."""
  from pipeline.model_handler import TokenIdsModelHandler
  card = read_card(model_dir)
  handler = TokenIdsModelHandler(
      str(pathlib.Path(model_dir) / contract.SAVED_MODEL_DIR),
      signatures={precision: card.classify_signature(precision)},
      precision=precision,
      model_fingerprint=card.model_fingerprint, max_batch_size=batch)
  model = handler.load_model()
  if wrap is not None:
    wrap(handler, model)
  records = [{"id": i, "tokens": t} for i, t in enumerate(tokens)]
  lengths = [len(t) for t in tokens]
  if boundaries is None:
    boundaries = pipeline_buckets(card.seq_length)
  batches = make_batches(lengths, batch=batch, mode=mode, boundaries=boundaries)
  if warmup:  # one small call: the first call of a signature initialises
    list(handler.run_inference(records[:2], model))
  labels = np.zeros(len(tokens), np.int32)
  padded = 0
  start = time.perf_counter()
  for rows in batches:
    results = handler.run_inference([records[r] for r in rows], model)
    padded += len(rows) * max(lengths[r] for r in rows)
    for r, result in zip(rows, results):
      labels[r] = result.inference["label_id"]
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "labels": labels,
          "padding_efficiency": sum(lengths) / padded,
          "batches": len(batches), "model": model, "handler": handler}


# ----------------------------------------------------------------------------
# (c) the whole pipeline


def write_input(path, ids, texts):
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table({"review_id": ids, "text": texts}), path)


# The pipeline's defaults (batches of 32 from length-sorted waves) with
# bfloat16, which the benchmark's models are not trained in.
PIPELINE_FLAGS = ("--precision=bfloat16", "--num_shards=1")


def run_pipeline(model_dir, input_path, output_prefix, extra=(),
                 flags=PIPELINE_FLAGS):
  from pipeline.run import run
  argv = [f"--input={input_path}", f"--model={model_dir}",
          f"--output={output_prefix}", "--runner=DirectRunner",
          *flags, *extra]
  start = time.perf_counter()
  result = run(argv, save_main_session=False, echo=lambda m: None)
  seconds = time.perf_counter() - start
  import pyarrow.parquet as pq
  scores = {}
  for f in result.score_files:
    t = pq.read_table(f, columns=["review_id", "label_id"])
    scores.update(zip(t.column("review_id").to_pylist(),
                      t.column("label_id").to_pylist()))
  return {"seconds": seconds, "scores": scores, "counts": result.counts,
          "metrics": result.metrics, "argv": argv}


# ----------------------------------------------------------------------------
# (c0): the pipeline in a fresh process, with its peak memory


def scale_point(model_dir, table, size, tmp, *, extra=(), log=print):
  """One pipeline run in a fresh process: time, peak RSS, its label ids."""
  import pyarrow.parquet as pq
  path = pathlib.Path(tmp) / f"in-{size}.parquet"
  if not path.exists():
    pq.write_table(table.slice(0, size), path, row_group_size=1024)
  out = pathlib.Path(tmp) / f"out-{size}-{len(extra)}"
  cmd = [sys.executable, str(THROUGHPUT), "--scale-worker", str(model_dir),
         str(path), str(out), *extra]
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  peak_rss = 0
  while proc.poll() is None:  # sample RSS (the child and its children)
    peak_rss = max(peak_rss, tree_rss(proc.pid))
    time.sleep(0.5)
  stdout, stderr = proc.communicate()
  seconds = time.perf_counter() - start
  if proc.returncode != 0:
    log(stderr[-3000:])
    raise RuntimeError(f"the pipeline failed at {size} reviews")
  worker = json.loads(stdout.strip().splitlines()[-1])
  manifest = json.loads(pathlib.Path(f"{out}-manifest.json").read_text())
  scored = pq.read_table(manifest["scores"], columns=["review_id", "label_id"])
  labels = dict(zip(scored.column("review_id").to_pylist(),
                    scored.column("label_id").to_pylist()))
  return {"reviews": size, "process_seconds": seconds,
          "pipeline_seconds": worker["seconds"],
          "peak_rss_mib": peak_rss / 2 ** 20,
          "maxrss_mib": worker["maxrss_mib"], "counts": worker["counts"],
          "labels": labels}


def scale_worker(model_dir, input_path, output, *extra):
  import resource
  r = run_pipeline(model_dir, input_path, output, extra=extra)
  print(json.dumps({"seconds": r["seconds"], "counts": r["counts"],
                    "maxrss_mib": resource.getrusage(
                        resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":  # a part of other scripts, not a benchmark
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.parse_args()
  parser.error("not a benchmark of its own: a part of benchmarks/throughput.py")
