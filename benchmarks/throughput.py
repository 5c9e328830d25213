"""Scoring throughput, side by side in one run.

    .venv/bin/python benchmarks/throughput.py [--num-reviews 1000]
        [--seq-lengths 128,512] [--results-dir benchmarks/results]

On the same model and the same N IMDB test reviews (sampled with a fixed
seed), at each sequence length, it times:

  (a) tutorial   reload the SavedModel, `serving_default` on raw strings in
                 batches of 32, every review padded to the full length, f32;
  (b) handler    pipeline.model_handler.TokenIdsModelHandler alone: its
                 load_model() and run_inference() on pre-tokenized records,
                 batched by length the way Beam's bucketed BatchElements does;
  (c) pipeline   pipeline.run.run(): Parquet → Parquet on the DirectRunner,
                 after a 64-review run of the same pipeline in this process,
                 so that, like (b) and (d), it is timed with the model loaded
                 (the process holds it across runs, as a Beam worker holds it
                 across bundles) and TensorFlow and Beam imported; (c0) is
                 the same 1,000 reviews in a fresh process, start-up included
                 (benchmarks/scale.py measures that start-up on its own);
  (d) peer       Hugging Face transformers' BertModel + mean pooling + linear
                 head on PyTorch (CPU), bf16 autocast, batches of 32 sorted by
                 length with dynamic padding, inference_mode, 2 threads; and
                 its float32 fixed-padding baseline.

plus the levers (batching, precision, batch size, XLA, threads,
overlapped tokenization), each measured on its own on (b). Both sides
score the same token ids (the peer gets ours, so both do the same work) with
the same fine-tuned weights (copied into the PyTorch model), so label
agreement with (a) is meaningful for every row.

Useful FLOPs count non-padding tokens only: a review of n tokens (with [CLS]
and [SEP]) costs n * BertConfig.flops_per_token(n), i.e. 2 FLOPs per
multiply-add of the q/k/v/output and FFN matmuls per token plus attention
scores and weighted sum over its own n tokens; embeddings, layer norms,
softmax and the pooler are not counted. The matmul peak of each precision is
the best of a few 4096x4096 tf.matmul (and torch.matmul) in the same run.

The models: models/bench-<L> are exported from a trained model's weights
(default models/quick, what run_local.sh trains; `--weights-from`) at each length L with the
current train/ code (re-exported whenever train/model/bert_backbone.py or
train/export/serving.py change), so a change to the backbone is measured here.
"""
import argparse
import bisect
import datetime
import gc
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine  # noqa: E402
from schemas import model_dir as contract  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def default_data_dir() -> pathlib.Path:
  """The IMDB Parquet files as run_local.sh and the tests find them:
  $REVIEWSCORE_DATA, else ../shared/data/imdb beside the repository, else
  data/imdb in it (where run_local.sh or `reviewscore download-imdb` puts
  them). Every benchmark's `--data-dir` defaults to it."""
  if os.environ.get("REVIEWSCORE_DATA"):
    return pathlib.Path(os.environ["REVIEWSCORE_DATA"])
  beside = REPO.parent / "shared" / "data" / "imdb"
  return beside if (beside / "test.parquet").is_file() else REPO / "data" / "imdb"


DATA_DIR = default_data_dir()
# The pipeline's earlier default edges; its default now is every 16 tokens
# up to the model's length (pipeline.settings.default_bucket_boundaries).
POWER_OF_TWO_BUCKETS = (16, 32, 64, 128, 256, 512)
BATCH = 32
# The pipeline's start-up cost is measured on this many reviews.
SMALL_RUN = 64


def pipeline_buckets(seq_length):
  from pipeline.settings import default_bucket_boundaries
  return tuple(default_bucket_boundaries(seq_length))


# ----------------------------------------------------------------------------
# Data and models


def sample_reviews(n, seed=0, data_dir=DATA_DIR):
  import pyarrow.parquet as pq
  table = pq.read_table(data_dir / "test.parquet",
                        columns=["review_id", "text", "label"])
  rows = np.random.default_rng(seed).choice(table.num_rows, n, replace=False)
  table = table.take(rows)
  return (table.column("review_id").to_pylist(),
          table.column("text").to_pylist(),
          np.asarray(table.column("label").to_pylist(), np.int32))


def _code_stamp():
  digest = hashlib.sha256()
  for name in ("train/model/bert_backbone.py", "train/export/serving.py",
               "train/model/classifier.py", "train/data/review_packer.py"):
    digest.update((REPO / name).read_bytes())
  return digest.hexdigest()[:16]


def prepare_models(seq_lengths, *, weights_from, models_dir, log=print):
  """models/bench-<L>: the trained weights of `weights_from` exported at L.

  Also writes hf_weights.npz in each: the same weights under Hugging Face
  BertModel names (plus head.weight/head.bias) for the PyTorch peer.
  """
  import train  # noqa: F401  (TF_USE_LEGACY_KERAS)
  import tensorflow as tf
  import tensorflow_hub as hub
  from train.model.classifier import (build_classifier, scoring_copies,
                                weights_fingerprint)
  from train.encoders.source import resolve_encoder
  from train.export.serving import ServingModule, save_serving_model, write_json
  from train.data.review_packer import ReviewPacker

  weights_from = pathlib.Path(weights_from)
  source_card = json.loads((weights_from / contract.MODEL_CARD_FILE).read_text())
  stamp = _code_stamp()
  out = {}
  for seq in seq_lengths:
    target = pathlib.Path(models_dir) / f"bench-{seq}"
    out[seq] = target
    card_path = target / contract.MODEL_CARD_FILE
    if card_path.exists():
      card = json.loads(card_path.read_text())
      if card.get("bench", {}).get("code_stamp") == stamp and \
          card["bench"].get("weights_from") == str(weights_from.resolve()):
        continue
    log(f"exporting {target} ({seq} tokens) from {weights_from} ...")
    source = resolve_encoder(source_card["encoder"]["name"])
    model = build_classifier(source, precision="float32",
                             pooling=source_card["pooling"],
                             restore_encoder=False)
    tf.train.Checkpoint(model=model).read(
        str(weights_from / "best" / "weights")
    ).expect_partial().assert_existing_objects_matched()
    models = {"float32": model, **scoring_copies(
        model, source, precisions=["bfloat16"],
        pooling=source_card["pooling"])}
    truncation = "head" if seq <= source_card["seq_length"] else "head+tail"
    packer = ReviewPacker(hub.load(source.preprocessor), seq_length=seq,
                          truncation=truncation, head_tokens=128)
    module = ServingModule(packer, models, serving_precision="float32")
    if target.exists():
      shutil.rmtree(target)
    target.mkdir(parents=True)
    save_serving_model(module, target / contract.SAVED_MODEL_DIR)
    _save_hf_weights(models["float32"], target / "hf_weights.npz")
    card = dict(source_card)
    card.update(model_name=target.name, seq_length=seq,
                truncation=packer.describe(), serving_precision="float32",
                precisions=sorted(models),
                signatures=sorted(module.signatures()),
                model_fingerprint=weights_fingerprint(models["float32"]),
                bench={"code_stamp": stamp,
                       "weights_from": str(weights_from.resolve())})
    write_json(card_path, card)
  return out


def _save_hf_weights(model, path):
  from train.encoders.importer import hf_tensor_names
  backbone = model.get_layer("encoder")
  w = {name: (variable.numpy().T if transposed else variable.numpy())
       for name, variable, transposed in hf_tensor_names(backbone)}
  head = model.get_layer("classifier")
  w["head.weight"] = head.kernel.numpy().T
  w["head.bias"] = head.bias.numpy()
  np.savez(path, **w)


def read_card(model_dir):
  """The validated model card of a local model directory."""
  return contract.ModelCard.from_json(
      (pathlib.Path(model_dir) / contract.MODEL_CARD_FILE).read_text())


def bert_config(model_dir):
  from train.model.bert_config import BertConfig
  return BertConfig.from_dict(read_card(model_dir).encoder["bert_config"])


def useful_flops(config, lengths):
  return float(sum(int(n) * config.flops_per_token(int(n)) for n in lengths))


def read_tokens(path):
  """Token id arrays saved as `lengths` and `flat` (np.savez)."""
  with np.load(path) as data:  # each data[key] reads the array anew
    lengths, flat = data["lengths"], data["flat"]
  return np.split(flat, np.cumsum(lengths)[:-1])


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


def _rerun(result, tokens, mode="sorted"):
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
# (d) the PyTorch peer (run in a subprocess: its own thread pools)


_PEER_TIMEOUT = 1800


def run_peer(model_dir, tokens, variants, *, batch=BATCH, seq_len,
             threads=2, omp_wait_policy=None, log=print):
  env = dict(os.environ)
  env.pop("OMP_WAIT_POLICY", None)
  if omp_wait_policy:
    env["OMP_WAIT_POLICY"] = omp_wait_policy
  with tempfile.TemporaryDirectory() as tmp:
    inputs = pathlib.Path(tmp) / "tokens.npz"
    np.savez(inputs, lengths=np.array([len(t) for t in tokens]),
             flat=np.concatenate(tokens))
    out = pathlib.Path(tmp) / "peer.json"
    cmd = [sys.executable, __file__, "--peer-worker", str(model_dir),
           str(inputs), str(out), ",".join(variants), str(batch),
           str(seq_len), str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=_PEER_TIMEOUT)
    if done.returncode != 0:
      log(done.stderr[-3000:])
      raise RuntimeError("the PyTorch peer failed")
    result = json.loads(out.read_text())
  for variant in variants:
    result[variant]["labels"] = np.asarray(result[variant]["labels"], np.int32)
    result[variant]["omp_wait_policy"] = omp_wait_policy or "default"
  return result


def best_peer(model_dir, tokens, *, seq_len, log=print):
  """The peer at its best: libgomp's default (spinning) wait policy and
  PASSIVE both tried on the bf16 run; the faster one runs the f32 baseline.

  With any other process on the 2 cores (even at nice 19) spinning OpenMP
  threads stall at every barrier (see the README), so the peer is given
  whichever policy suits the machine at the time.
  """
  tries = {policy: run_peer(model_dir, tokens, ["bf16_sorted"],
                            seq_len=seq_len, omp_wait_policy=policy, log=log)
           for policy in (None, "PASSIVE")}
  rates = {p: 1 / r["bf16_sorted"]["seconds"] for p, r in tries.items()}
  best = max(rates, key=rates.get)
  log(f"peer bf16 OMP_WAIT_POLICY default {len(tokens) * rates[None]:.1f} "
      f"reviews/s, PASSIVE {len(tokens) * rates['PASSIVE']:.1f}: using "
      f"{best or 'default'}")
  result = dict(tries[best])
  result.update(run_peer(model_dir, tokens, ["f32_fixed"], seq_len=seq_len,
                         omp_wait_policy=best, log=log))
  result["policy_rates"] = {str(p or "default"): len(tokens) * r
                            for p, r in rates.items()}
  return result


def peer_worker(model_dir, inputs, out, variants, batch, seq_len, threads):
  """PyTorch: BertModel (from the MiniLM checkpoint) + mean pool + linear."""
  import torch
  import transformers
  from train.encoders.hf_checkpoint import minilm_directory
  torch.set_num_threads(int(threads))
  batch, seq_len = int(batch), int(seq_len)
  tokens = read_tokens(inputs)
  lengths = np.array([len(t) for t in tokens])
  bert = transformers.BertModel.from_pretrained(
      str(minilm_directory()), add_pooling_layer=True).eval()
  weights = dict(np.load(pathlib.Path(model_dir) / "hf_weights.npz"))
  head = torch.nn.Linear(bert.config.hidden_size, 1)
  head.weight.data = torch.from_numpy(weights.pop("head.weight"))
  head.bias.data = torch.from_numpy(weights.pop("head.bias"))
  state = {k: torch.from_numpy(v) for k, v in weights.items()}
  missing, unexpected = bert.load_state_dict(state, strict=False)
  missing = [m for m in missing if not m.endswith("position_ids")]
  if missing or unexpected:
    raise RuntimeError(f"weights do not match: {missing} {unexpected}")

  def forward(ids, mask):
    hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    return head(pooled.float()).squeeze(-1)

  def batches_of(kind):
    if kind.endswith("fixed"):
      order = np.arange(len(tokens))
    else:
      order = np.argsort(lengths, kind="stable")
    for i in range(0, len(order), batch):
      rows = order[i:i + batch]
      length = seq_len if kind.endswith("fixed") else int(lengths[rows].max())
      ids = np.zeros((len(rows), length), np.int64)
      mask = np.zeros((len(rows), length), np.int64)
      for j, r in enumerate(rows):
        ids[j, :lengths[r]] = tokens[r]
        mask[j, :lengths[r]] = 1
      yield rows, torch.from_numpy(ids), torch.from_numpy(mask)

  results = {"versions": {"torch": torch.__version__,
                          "transformers": transformers.__version__,
                          "attn_implementation":
                              getattr(bert.config, "_attn_implementation",
                                      None)}}
  for variant in variants.split(","):
    bf16 = variant.startswith("bf16")
    prepared = list(batches_of(variant))
    labels = np.zeros(len(tokens), np.int32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                enabled=bf16):
      forward(prepared[0][1][:2], prepared[0][2][:2])  # warm-up
      forward(prepared[-1][1][:2], prepared[-1][2][:2])
      start = time.perf_counter()
      for rows, ids, mask in prepared:
        labels[rows] = (forward(ids, mask) >= 0).int().numpy()
      seconds = time.perf_counter() - start
    padded = sum(ids.numel() for _, ids, _ in prepared)
    results[variant] = {"seconds": seconds, "labels": labels.tolist(),
                        "padding_efficiency": float(lengths.sum() / padded)}
  # Matmul peaks in PyTorch too (same machine, same run).
  results["matmul_gflops"] = machine.torch_matmul_peaks(n=4096, reps=5)
  pathlib.Path(out).write_text(json.dumps(results))


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
    np.savez(inputs, lengths=np.array([len(t) for t in tokens]),
             flat=np.concatenate(tokens))
    out = pathlib.Path(tmp) / "out.json"
    done = subprocess.run(
        [sys.executable, __file__, "--threads-worker", str(model_dir),
         str(inputs), str(out), str(intra), str(inter), precision],
        capture_output=True, text=True, timeout=_PEER_TIMEOUT)
    if done.returncode != 0:
      raise RuntimeError(done.stderr[-2000:])
    return json.loads(out.read_text())


# ----------------------------------------------------------------------------
# The run


def _row(name, seconds, n, flops, *, precision, peaks, labels=None,
         reference=None, note="", padding=None):
  rate = n / seconds
  peak = peaks.get(precision)
  gflops = flops / seconds / 1e9
  row = {"name": name, "reviews_per_s": rate, "seconds": seconds,
         "useful_gflops": gflops, "precision": precision,
         "peak_fraction": gflops / peak if peak else None,
         "padding_efficiency": padding, "note": note}
  if labels is not None and reference is not None:
    row["agreement"] = float(np.mean(np.asarray(labels) == reference))
  return row


def benchmark(args, log=print):
  started = datetime.datetime.now(datetime.timezone.utc)
  seq_lengths = [int(s) for s in args.seq_lengths.split(",")]
  models = prepare_models(seq_lengths, weights_from=args.weights_from,
                          models_dir=args.models_dir, log=log)
  import train  # noqa: F401
  import tensorflow as tf
  ids, texts, gold = sample_reviews(args.num_reviews, args.seed, args.data_dir)
  log(f"{len(texts)} reviews from {args.data_dir / 'test.parquet'} "
      f"(seed {args.seed}); TensorFlow {tf.__version__}")
  described = machine.describe()
  log(machine.summary(described))
  peaks = machine.tf_matmul_peaks(n=4096, reps=5, xla=True)
  log("tf.matmul 4096² GFLOP/s in this process: " + ", ".join(
      f"{k} {v:.0f}" for k, v in peaks.items()))
  best_peaks = {"float32": peaks["float32"], "bfloat16": peaks["bfloat16"]}
  report = {"date": started.isoformat(timespec="seconds"),
            "machine": described, "num_reviews": len(texts),
            "seed": args.seed, "matmul_gflops_tf": peaks, "runs": {}}
  levers_on = not args.no_levers
  results_dir = pathlib.Path(args.results_dir)
  results_dir.mkdir(parents=True, exist_ok=True)
  for seq in seq_lengths:
    model_dir = models[seq]
    config = bert_config(model_dir)
    n = len(texts)
    rows, levers = [], []
    log(f"\n=== {seq} tokens: {model_dir} ===")
    # (a)
    a = run_tutorial(model_dir, texts)
    reference = a["labels"]
    from pipeline.scoring_model import acquire_model
    model = acquire_model(str(pathlib.Path(model_dir) / contract.SAVED_MODEL_DIR))
    tokens, tokenize_seconds = tokenize_all(model, texts)
    lengths = np.array([len(t) for t in tokens])
    flops = useful_flops(config, lengths)
    log(f"tokens: mean {lengths.mean():.0f}, {np.mean(lengths >= seq):.0%} at "
        f"the cap; tokenize {n / tokenize_seconds:.0f} reviews/s; "
        f"{flops / n / 1e9:.2f} useful GFLOP/review")
    rows.append(_row("(a) tutorial: serving_default, strings, f32, padded",
                     a["seconds"], n, flops, precision="float32",
                     peaks=best_peaks, labels=reference, reference=reference,
                     padding=lengths.sum() / (n * seq)))
    log(_fmt_row(rows[-1]))
    # (b)
    b = run_handler(model_dir, tokens, precision="bfloat16", mode="beam")
    rows.append(_row("(b) handler: bf16, Beam buckets", b["seconds"], n, flops,
                     precision="bfloat16", peaks=best_peaks,
                     labels=b["labels"], reference=reference,
                     padding=b["padding_efficiency"]))
    log(_fmt_row(rows[-1]))
    handler_labels = b["labels"]
    # (c): drop our references to the model; the warm-up run loads the
    # pipeline's own, which the timed run then finds in the process.
    del b, model
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp:
      input_path = pathlib.Path(tmp) / "reviews.parquet"
      write_input(input_path, ids, texts)
      small = pathlib.Path(tmp) / "small.parquet"
      write_input(small, ids[:SMALL_RUN], texts[:SMALL_RUN])
      warm_up = run_pipeline(model_dir, small, str(pathlib.Path(tmp) / "s"))
      c = run_pipeline(model_dir, input_path, str(pathlib.Path(tmp) / "out"))
      # (c0): the same input in a fresh process (start-up included).
      import pyarrow as pa
      cold = _scale_point(model_dir, pa.table({"review_id": ids, "text": texts}),
                          n, tmp, log=log)
    c_labels = np.array([c["scores"].get(i, -1) for i in ids])
    rows.append(_row("(c) pipeline: Parquet→Parquet, DirectRunner, warm",
                     c["seconds"], n, flops, precision="bfloat16",
                     peaks=best_peaks, labels=c_labels, reference=reference,
                     note=f"after a {SMALL_RUN}-review run of "
                     f"{warm_up['seconds']:.1f}s in this process"))
    rows[-1]["metrics"] = c["metrics"]
    rows[-1]["argv"] = c["argv"]
    log(_fmt_row(rows[-1]))
    cold_labels = np.array([cold["labels"].get(i, -1) for i in ids])
    cold_row = _row("(c0) pipeline, fresh process, start-up included",
                    cold["pipeline_seconds"], n, flops, precision="bfloat16",
                    peaks=best_peaks, labels=cold_labels, reference=reference,
                    note=f"process {cold['process_seconds']:.1f}s, "
                    f"peak RSS {cold['peak_rss_mib']:.0f} MiB")
    log(_fmt_row(cold_row))
    # (d)
    peer = best_peer(model_dir, tokens, seq_len=seq, log=log)
    report.setdefault("matmul_gflops_torch", peer["matmul_gflops"])
    report["peer_versions"] = peer["versions"]
    peer_policy = peer["bf16_sorted"]["omp_wait_policy"]
    rows.append(_row("(d) PyTorch peer: bf16 autocast, sorted, dynamic pad",
                     peer["bf16_sorted"]["seconds"], n, flops,
                     precision="bfloat16", peaks=best_peaks,
                     labels=peer["bf16_sorted"]["labels"], reference=reference,
                     padding=peer["bf16_sorted"]["padding_efficiency"],
                     note=f"OMP_WAIT_POLICY {peer_policy}; tried "
                     + json.dumps(peer["policy_rates"])))
    log(_fmt_row(rows[-1]))
    rows.append(_row("(d0) PyTorch f32, fixed padding",
                     peer["f32_fixed"]["seconds"], n, flops,
                     precision="float32", peaks=best_peaks,
                     labels=peer["f32_fixed"]["labels"], reference=reference,
                     padding=peer["f32_fixed"]["padding_efficiency"]))
    log(_fmt_row(rows[-1]))
    rows.append(cold_row)
    a_rate = rows[0]["reviews_per_s"]
    d_rate = rows[3]["reviews_per_s"]
    for row in rows:
      row["vs_a"] = row["reviews_per_s"] / a_rate
      row["vs_d"] = row["reviews_per_s"] / d_rate
    # Levers, each on its own against (b)'s configuration.
    if levers_on:
      m = min(args.lever_reviews, n)
      sub = tokens[:m]
      sub_ref = reference[:m]
      sub_flops = useful_flops(config, lengths[:m])

      def lever(name, seconds, precision="bfloat16", labels=None, **kw):
        row = _row(name, seconds, m, sub_flops, precision=precision,
                   peaks=best_peaks, labels=labels,
                   reference=sub_ref if labels is not None else None, **kw)
        row["n"] = m
        levers.append(row)
        log("  lever " + _fmt_row(row))

      acquire_model(str(pathlib.Path(model_dir) / contract.SAVED_MODEL_DIR))  # warm
      base = run_handler(model_dir, sub, precision="bfloat16", mode="beam")
      lever("(b) as above: bf16, Beam buckets, batch 32", base["seconds"],
            labels=base["labels"], padding=base["padding_efficiency"])
      for mode in ("none", "sorted"):
        r = run_handler(model_dir, sub, precision="bfloat16", mode=mode)
        lever(f"batching: {mode}", r["seconds"], labels=r["labels"],
              padding=r["padding_efficiency"])
      r = run_handler(model_dir, sub, precision="bfloat16", mode="beam",
                      boundaries=POWER_OF_TWO_BUCKETS)
      lever("batching: Beam buckets at powers of two (the old default)",
            r["seconds"], labels=r["labels"], padding=r["padding_efficiency"])
      r = run_handler(model_dir, sub, precision="float32", mode="beam")
      lever("precision: float32", r["seconds"], precision="float32",
            labels=r["labels"], padding=r["padding_efficiency"])
      for bs in (16, 64):
        r = run_handler(model_dir, sub, precision="bfloat16", mode="beam",
                        batch=bs)
        lever(f"batch size {bs}", r["seconds"], labels=r["labels"],
              padding=r["padding_efficiency"])
      for precision in ("float32", "bfloat16"):
        r = run_handler(model_dir, sub, precision=precision, mode="sorted",
                        wrap=xla_wrap(64))
        lever(f"XLA jit_compile ({precision}, sorted, lengths to ×64, "
              "compiles included)", r["seconds"], precision=precision,
              labels=r["labels"], padding=r["padding_efficiency"])
        warm = _rerun(r, sub)
        lever(f"XLA jit_compile ({precision}), second pass: shapes compiled",
              warm, precision=precision)
      for intra, inter in ((0, 0), (2, 1), (1, 2), (1, 1)):
        r = run_threads(model_dir, sub, intra, inter)
        lever(f"threads intra={intra} inter={inter}, fresh process"
              + (" (TF's default)" if intra == 0 else ""), r["seconds"])
      sub_texts = texts[:m]
      with tempfile.TemporaryDirectory() as tmp:
        sub_input = pathlib.Path(tmp) / "sub.parquet"
        write_input(sub_input, ids[:m], sub_texts)
        for name, extra in (
            ("pipeline, the flags of (c)", ()),
            ("pipeline, --sort_wave_size=0 (batches in arrival order)",
             ("--sort_wave_size=0",))):
          try:
            r = run_pipeline(model_dir, sub_input, str(pathlib.Path(tmp) / "o"),
                             extra=extra)
            got = np.array([r["scores"].get(i, -1) for i in ids[:m]])
            lever(name, r["seconds"], labels=got)
          except Exception as e:  # noqa: BLE001
            log(f"  lever {name} failed: {e}")
      for overlap in (False, True):
        r = run_overlap(model_dir, sub_texts, overlap=overlap)
        lever(f"tokenize+classify, {'overlapped' if overlap else 'in turn'} "
              "(sorted)", r["seconds"])
    report["runs"][str(seq)] = {
        "loadavg_after": os.getloadavg(), "other_processes": _busy_others(),
        "model_dir": str(model_dir), "mean_tokens": float(lengths.mean()),
        "at_cap": float(np.mean(lengths >= seq)),
        "useful_gflop_per_review": flops / n / 1e9,
        "tokenize_reviews_per_s": n / tokenize_seconds,
        "gold_accuracy_a": float(np.mean(reference == gold)),
        "gold_accuracy_b": float(np.mean(handler_labels == gold)),
        "rows": rows, "levers": levers}
    log(format_table(seq, report["runs"][str(seq)], best_peaks))
  report["targets"] = check_targets(report, best_peaks)
  for line in report["targets"]["lines"]:
    log(line)
  report["finished"] = datetime.datetime.now(
      datetime.timezone.utc).isoformat(timespec="seconds")
  path = results_dir / "throughput.json"
  path.write_text(json.dumps(report, indent=1, default=_jsonable))
  plot(report, results_dir / "throughput.png")
  log(f"\nwrote {path} and {results_dir / 'throughput.png'}")
  return report


def _jsonable(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return str(value)


def _busy_others():
  """Other processes using the CPU now (the numbers are only as quiet as
  the machine was)."""
  try:
    out = subprocess.run(["ps", "-eo", "pid,ni,pcpu,etime,args", "--sort=-pcpu"],
                         capture_output=True, text=True, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  busy = []
  for line in out.splitlines()[1:]:
    parts = line.split(None, 4)
    if len(parts) == 5 and int(parts[0]) != os.getpid() and \
        float(parts[2]) >= 10:
      busy.append(" ".join(parts)[:160])
  return busy


def _fmt_row(row):
  agreement = row.get("agreement")
  peak = row.get("peak_fraction")
  return (f"{row['name'][:58]:58s} {row['reviews_per_s']:8.1f}/s "
          f"{row['useful_gflops']:6.0f} GF/s "
          f"{'' if peak is None else f'{peak:4.0%}':>5s} "
          f"{'' if agreement is None else f'{agreement:7.2%}':>8s}")


def format_table(seq, run, peaks):
  lines = [f"\n{seq} tokens: {run['mean_tokens']:.0f} mean tokens, "
           f"{run['useful_gflop_per_review']:.2f} useful GFLOP/review; "
           f"peaks f32 {peaks['float32']:.0f}, bf16 {peaks['bfloat16']:.0f} "
           "GFLOP/s",
           f"{'':58s} {'reviews/s':>10s} {'×(a)':>6s} {'×(d)':>6s} "
           f"{'GFLOP/s':>8s} {'%peak':>6s} {'agree(a)':>9s} {'pad eff':>8s}"]
  for row in run["rows"]:
    pad = row["padding_efficiency"]
    pad = "" if pad is None else f"{pad:.0%}"
    lines.append(
        f"{row['name'][:58]:58s} {row['reviews_per_s']:10.1f} "
        f"{row['vs_a']:6.2f} {row['vs_d']:6.2f} {row['useful_gflops']:8.0f} "
        f"{row['peak_fraction']:6.0%} {row.get('agreement', float('nan')):9.2%} "
        f"{pad:>8s}")
  if run["levers"]:
    base = run["levers"][0]["reviews_per_s"]
    lines.append(f"levers on (b), each alone on the first "
                 f"{run['levers'][0].get('n', '')} reviews "
                 "(× = against the first line):")
    for row in run["levers"]:
      agreement = row.get("agreement")
      lines.append(
          f"  {row['name'][:70]:70s} {row['reviews_per_s']:8.1f}/s "
          f"×{row['reviews_per_s'] / base:5.2f} "
          f"{row['peak_fraction']:5.0%} of {row['precision']} peak"
          + ("" if agreement is None else f"  agree {agreement:.2%}"))
  return "\n".join(lines)


def check_targets(report, peaks):
  lines, ok = ["\nchecks against the peer (d), the bf16 peak and (a):"], {}
  for seq, run in report["runs"].items():
    rows = {r["name"][:3]: r for r in run["rows"]}
    b, c, d = rows["(b)"], rows["(c)"], rows["(d)"]
    cold = rows["(c0"]
    checks = {
        "b>=d": b["reviews_per_s"] >= d["reviews_per_s"],
        "c>=0.9d": c["reviews_per_s"] >= 0.9 * d["reviews_per_s"],
        "b_flops>=65%peak": b["peak_fraction"] >= 0.65,
        "b_agreement>=99.5%": b["agreement"] >= 0.995,
        "c_agreement>=99.5%": c["agreement"] >= 0.995,
    }
    ok[seq] = checks
    lines.append(
        f"  {seq:>4s} tokens: (b)/(d) {b['reviews_per_s'] / d['reviews_per_s']:.2f}, "
        f"(c)/(d) {c['reviews_per_s'] / d['reviews_per_s']:.2f} "
        f"(fresh process, start-up included: "
        f"{cold['reviews_per_s'] / d['reviews_per_s']:.2f}), "
        f"(b) {b['peak_fraction']:.0%} of bf16 peak, agreement (b) "
        f"{b['agreement']:.2%} (c) {c['agreement']:.2%} → "
        + ", ".join(f"{k} {'MET' if v else 'not met'}" for k, v in checks.items()))
  return {"checks": ok, "lines": lines}


def plot(report, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  runs = report["runs"]
  fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5),
                           squeeze=False)
  for ax, (seq, run) in zip(axes[0], runs.items()):
    short = {"(a)": "(a) tutorial", "(b)": "(b) handler", "(c)": "(c) pipeline",
             "(c0)": "(c0) fresh process",
             "(d)": "(d) torch bf16", "(d0)": "(d0) torch f32"}
    names = [short.get(r["name"].split()[0], r["name"].split()[0])
             for r in run["rows"]]
    rates = [r["reviews_per_s"] for r in run["rows"]]
    bars = ax.bar(names, rates,
                  color=["#999", "#2a7", "#5b9", "#c63", "#e96", "#9cb"])
    for bar, rate in zip(bars, rates):
      ax.annotate(f"{rate:.1f}", (bar.get_x() + bar.get_width() / 2, rate),
                  ha="center", va="bottom", fontsize=8)
    ax.set_title(f"{seq} tokens, {report['num_reviews']} IMDB test reviews")
    ax.set_ylabel("reviews/s")
    ax.tick_params(axis="x", labelsize=8)
  fig.suptitle(f"scoring throughput, {report['date']}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ----------------------------------------------------------------------------
# (c0): the pipeline in a fresh process, with its peak memory


def _scale_point(model_dir, table, size, tmp, *, extra=(), log=print):
  """One pipeline run in a fresh process: time, peak RSS, its label ids."""
  import pyarrow.parquet as pq
  path = pathlib.Path(tmp) / f"in-{size}.parquet"
  if not path.exists():
    pq.write_table(table.slice(0, size), path, row_group_size=1024)
  out = pathlib.Path(tmp) / f"out-{size}-{len(extra)}"
  cmd = [sys.executable, __file__, "--scale-worker", str(model_dir),
         str(path), str(out), *extra]
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  peak_rss = 0
  while proc.poll() is None:  # sample RSS (the child and its children)
    peak_rss = max(peak_rss, _tree_rss(proc.pid))
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


def _tree_rss(pid):
  total = 0
  pids = [pid]
  try:
    children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
    pids += [int(p) for p in children.split()]
  except OSError:
    pass
  for p in pids:
    try:
      for line in open(f"/proc/{p}/status"):
        if line.startswith("VmRSS:"):
          total += int(line.split()[1]) * 1024
    except OSError:
      pass
  return total


def scale_worker(model_dir, input_path, output, *extra):
  import resource
  r = run_pipeline(model_dir, input_path, output, extra=extra)
  print(json.dumps({"seconds": r["seconds"], "counts": r["counts"],
                    "maxrss_mib": resource.getrusage(
                        resource.RUSAGE_SELF).ru_maxrss / 1024}))


# ----------------------------------------------------------------------------


def _without_pytorch():
  """Keeps PyTorch out of this process, as it is out of a scoring worker.

  The benchmark extra installs PyTorch for the peer (d), which runs in
  processes of its own. Beam's RunInference imports it wherever it is
  installed (apache_beam/ml/inference/model_manager.py, for a GPU model
  manager we do not use): 1.4-1.7 s and 210 MiB per process here, which
  workers that install reviewscore (no PyTorch) never pay. Beam catches the
  ImportError and goes on without that manager.
  """
  from runtime.quiet import keep_pytorch_out
  keep_pytorch_out()


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "--peer-worker":
    return peer_worker(*argv[1:])
  _without_pytorch()
  if argv and argv[0] == "--threads-worker":
    return run_threads_worker(*argv[1:])
  if argv and argv[0] == "--scale-worker":
    return scale_worker(*argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num-reviews", type=int, default=1000)
  parser.add_argument("--seq-lengths", default="128,512")
  parser.add_argument("--lever-reviews", type=int, default=256,
                      help="reviews for each lever measurement")
  parser.add_argument("--no-levers", action="store_true")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--weights-from", default=str(REPO / "models/quick"),
                      help="a trained model directory whose weights to use")
  parser.add_argument("--models-dir", default=str(REPO / "models"))
  parser.add_argument("--results-dir", default=str(REPO / "benchmarks/results"))
  args = parser.parse_args(argv)
  benchmark(args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
