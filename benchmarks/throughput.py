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
import datetime
import gc
import json
import os
import pathlib
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine  # noqa: E402
from benchmarks.processes import busy_others, without_pytorch  # noqa: E402
from benchmarks.reviews_and_models import (DATA_DIR, bert_config,  # noqa: E402
                                           prepare_models, sample_reviews,
                                           useful_flops)
from benchmarks.scoring_levers import (POWER_OF_TWO_BUCKETS,  # noqa: E402
                                       rerun, run_overlap, run_threads,
                                       run_threads_worker, xla_wrap)
from benchmarks.scoring_paths import (run_handler,  # noqa: E402
                                      run_pipeline, run_tutorial, scale_point,
                                      scale_worker, tokenize_all, write_input)
from benchmarks.throughput_report import (check_targets,  # noqa: E402
                                          format_row, format_table, jsonable,
                                          make_row, plot)
from benchmarks.torch_peer import best_peer, peer_worker  # noqa: E402
from schemas import model_dir as contract  # noqa: E402
# The other benchmarks and the tests take these from here.
from benchmarks.reviews_and_models import read_card  # noqa: E402, F401
from benchmarks.scoring_paths import make_batches  # noqa: E402, F401

# The pipeline's start-up cost is measured on this many reviews.
SMALL_RUN = 64


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
    rows.append(make_row("(a) tutorial: serving_default, strings, f32, padded",
                         a["seconds"], n, flops, precision="float32",
                         peaks=best_peaks, labels=reference,
                         reference=reference,
                         padding=lengths.sum() / (n * seq)))
    log(format_row(rows[-1]))
    # (b)
    b = run_handler(model_dir, tokens, precision="bfloat16", mode="beam")
    rows.append(make_row("(b) handler: bf16, Beam buckets", b["seconds"], n,
                         flops, precision="bfloat16", peaks=best_peaks,
                         labels=b["labels"], reference=reference,
                         padding=b["padding_efficiency"]))
    log(format_row(rows[-1]))
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
      cold = scale_point(model_dir, pa.table({"review_id": ids, "text": texts}),
                         n, tmp, log=log)
    c_labels = np.array([c["scores"].get(i, -1) for i in ids])
    rows.append(make_row("(c) pipeline: Parquet→Parquet, DirectRunner, warm",
                         c["seconds"], n, flops, precision="bfloat16",
                         peaks=best_peaks, labels=c_labels,
                         reference=reference,
                         note=f"after a {SMALL_RUN}-review run of "
                         f"{warm_up['seconds']:.1f}s in this process"))
    rows[-1]["metrics"] = c["metrics"]
    rows[-1]["argv"] = c["argv"]
    log(format_row(rows[-1]))
    cold_labels = np.array([cold["labels"].get(i, -1) for i in ids])
    cold_row = make_row("(c0) pipeline, fresh process, start-up included",
                        cold["pipeline_seconds"], n, flops,
                        precision="bfloat16", peaks=best_peaks,
                        labels=cold_labels, reference=reference,
                        note=f"process {cold['process_seconds']:.1f}s, "
                        f"peak RSS {cold['peak_rss_mib']:.0f} MiB")
    log(format_row(cold_row))
    # (d)
    peer = best_peer(model_dir, tokens, seq_len=seq, log=log)
    report.setdefault("matmul_gflops_torch", peer["matmul_gflops"])
    report["peer_versions"] = peer["versions"]
    peer_policy = peer["bf16_sorted"]["omp_wait_policy"]
    rows.append(make_row("(d) PyTorch peer: bf16 autocast, sorted, dynamic pad",
                         peer["bf16_sorted"]["seconds"], n, flops,
                         precision="bfloat16", peaks=best_peaks,
                         labels=peer["bf16_sorted"]["labels"],
                         reference=reference,
                         padding=peer["bf16_sorted"]["padding_efficiency"],
                         note=f"OMP_WAIT_POLICY {peer_policy}; tried "
                         + json.dumps(peer["policy_rates"])))
    log(format_row(rows[-1]))
    rows.append(make_row("(d0) PyTorch f32, fixed padding",
                         peer["f32_fixed"]["seconds"], n, flops,
                         precision="float32", peaks=best_peaks,
                         labels=peer["f32_fixed"]["labels"],
                         reference=reference,
                         padding=peer["f32_fixed"]["padding_efficiency"]))
    log(format_row(rows[-1]))
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
        row = make_row(name, seconds, m, sub_flops, precision=precision,
                       peaks=best_peaks, labels=labels,
                       reference=sub_ref if labels is not None else None, **kw)
        row["n"] = m
        levers.append(row)
        log("  lever " + format_row(row))

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
        warm = rerun(r, sub)
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
        "loadavg_after": os.getloadavg(), "other_processes": busy_others(),
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
  path.write_text(json.dumps(report, indent=1, default=jsonable))
  plot(report, results_dir / "throughput.png")
  log(f"\nwrote {path} and {results_dir / 'throughput.png'}")
  return report


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "--peer-worker":
    return peer_worker(*argv[1:])
  without_pytorch()
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
