"""Training throughput, ours against the PyTorch peer on the same batches.

    .venv/bin/python benchmarks/train_throughput.py [--seq-lengths 128,256]
        [--precisions float32,bfloat16] [--steps 6] [--batch-size 32]

Ours: train.model.classifier.build_classifier (MiniLM from encoders/minilm, mean
pooling) and the step function of train.loops.trainer.Trainer (AdamW, clipping,
the same tf.function that `reviewscore train` runs). The peer: Hugging Face
transformers' BertModel (the same MiniLM checkpoint) + mean pooling + linear
head, torch.optim.AdamW, global-norm clipping, BCE loss, bf16 autocast for
bfloat16, 2 threads. Both get the same length-bucketed batches of real IMDB
training reviews (our tokenizer, head+tail truncation, dynamic padding as in
train.loops.trainer.epoch_batches); the first 2 steps (tracing, oneDNN primitive
creation) are not timed. Writes benchmarks/results/train_throughput.json
(with the machine as benchmarks/machine.py describes it) and a plot.
"""
import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine  # noqa: E402
from benchmarks.throughput import DATA_DIR  # noqa: E402
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WARMUP = 2


def make_batches(seq, n_batches, batch_size, *, encoder, data_dir, seed=0):
  import train  # noqa: F401
  import tensorflow as tf
  import tensorflow_hub as hub
  import pyarrow.parquet as pq
  from train.encoders.source import resolve_encoder
  from train.data.review_packer import ReviewPacker
  from train.loops.trainer import _batch_inputs, epoch_batches, tokenize_reviews
  source = resolve_encoder(encoder)
  table = pq.read_table(pathlib.Path(data_dir) / "train.parquet",
                        columns=["text", "label"])
  rows = np.random.default_rng(seed).choice(
      table.num_rows, batch_size * 64, replace=False)
  table = table.take(rows)
  packer = ReviewPacker(hub.load(source.preprocessor), seq_length=seq,
                        truncation="head+tail", head_tokens=128)
  data = tokenize_reviews(packer, table.column("text").to_pylist(),
                          table.column("label").to_pylist())
  order = epoch_batches(data.lengths, batch_size=batch_size, seed=seed,
                        epoch=0, length_bucketing=True)
  out = []
  for rows in order[:n_batches]:
    ids, mask = _batch_inputs(data, rows)
    out.append((ids, mask, data.labels[rows].astype(np.float32)))
  del tf
  return out


def ours(batches, precision, encoder):
  import train  # noqa: F401
  from train.model.classifier import build_classifier
  from train.encoders.source import resolve_encoder
  from train.loops.trainer import Trainer, TrainSettings, TokenizedReviews
  source = resolve_encoder(encoder)
  model = build_classifier(source, precision=precision, pooling="mean")
  settings = TrainSettings(batch_size=len(batches[0][2]), epochs=1,
                           precision=precision, pooling="mean")
  dummy = TokenizedReviews(np.zeros((1, 8), np.int32), np.array([8]),
                           np.array([0]))
  with tempfile.TemporaryDirectory() as tmp:
    trainer = Trainer(model, settings, dummy, dummy, tmp, run_identity={},
                      progress=lambda m: None)
    step = trainer._train_step
    for ids, mask, labels in batches[:WARMUP]:
      float(step(ids, mask, labels))
    start = time.perf_counter()
    for ids, mask, labels in batches[WARMUP:]:
      loss = float(step(ids, mask, labels))
    seconds = time.perf_counter() - start
  return seconds, loss


def compare_training_steps(variants, *, seq_length, steps, encoder, data_dir,
                           precision="bfloat16"):
  """Seconds per training step of `reviewscore train` in `precision`
  (MiniLM, mean pooling, batches of 32 IMDB training reviews at up to
  `seq_length` tokens) for each of `variants`, {name: a context manager
  factory in force while that variant's model is built and its step
  traced}: one model per variant in this process, steps alternating on the
  same batches after one untimed step each. Returns {name: seconds}."""
  import train  # noqa: F401
  from train.model.classifier import build_classifier
  from train.encoders.source import resolve_encoder
  from train.loops.trainer import TokenizedReviews, Trainer, TrainSettings
  batches = make_batches(seq_length, steps + 1, 32, encoder=encoder,
                         data_dir=data_dir)
  source = resolve_encoder(encoder)
  settings = TrainSettings(batch_size=32, epochs=1, precision=precision,
                           pooling="mean")
  dummy = TokenizedReviews(np.zeros((1, 8), np.int32), np.array([8]),
                           np.array([0]))
  step_fns = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, variant in variants.items():
      with variant():
        model = build_classifier(source, precision=precision, pooling="mean")
        trainer = Trainer(model, settings, dummy, dummy, f"{tmp}/{name}",
                          run_identity={}, progress=lambda m: None)
        step_fns[name] = trainer._train_step
        float(step_fns[name](*batches[0]))  # traced here
    times = {name: 0.0 for name in step_fns}
    for batch in batches[1:]:
      for name, step in step_fns.items():
        start = time.perf_counter()
        float(step(*batch))
        times[name] += time.perf_counter() - start
  return {name: seconds / steps for name, seconds in times.items()}


def print_training_steps(variants, *, seq_length, steps, encoder, data_dir,
                         precision="bfloat16"):
  """compare_training_steps for {"stock": ..., "ours": ...}, printed."""
  seconds = compare_training_steps(variants, seq_length=seq_length,
                                   steps=steps, encoder=encoder,
                                   data_dir=data_dir, precision=precision)
  print(f"training step in {precision}, {steps} batches of 32 at up to "
        f"{seq_length} tokens: "
        f"stock {seconds['stock']:.2f} s  ours {seconds['ours']:.2f} s"
        f"  ×{seconds['stock'] / seconds['ours']:.2f}")


def run_side_by_side(description, argv, *, first_part, calls,
                     training_variants):
  """A stock-against-ours script: `calls(seq_length, rounds)` (its part
  one, `first_part`), then `--train-steps` alternating training steps of
  the variants `training_variants()` returns ({"stock": ..., "ours": ...},
  as compare_training_steps takes them), printed."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--seq-length", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--train-steps", type=int, default=6,
                      help=f"alternating training steps (0: {first_part} only)")
  parser.add_argument("--encoder", default=str(REPO / "encoders/minilm"))
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--precisions", default="bfloat16",
                      help="of the training steps: float32, bfloat16 or both")
  args = parser.parse_args(argv)
  import train  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
  calls(args.seq_length, args.rounds)
  for precision in args.precisions.split(",") if args.train_steps else ():
    print_training_steps(training_variants(), seq_length=args.seq_length,
                         steps=args.train_steps, encoder=args.encoder,
                         data_dir=args.data_dir, precision=precision)


def peer(batches, precision, threads=2):
  import torch
  import transformers
  from train.encoders.hf_checkpoint import minilm_directory
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  bert = transformers.BertModel.from_pretrained(str(minilm_directory()))
  bert.train()
  head = torch.nn.Linear(bert.config.hidden_size, 1)
  params = list(bert.parameters()) + list(head.parameters())
  optimizer = torch.optim.AdamW(params, lr=3e-5, weight_decay=0.01, eps=1e-6)
  loss_fn = torch.nn.BCEWithLogitsLoss()
  bf16 = precision == "bfloat16"

  def step(ids, mask, labels):
    ids, mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
      hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
      m = mask.unsqueeze(-1).to(hidden.dtype)
      pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
      logits = head(pooled.float()).squeeze(-1)
    loss = loss_fn(logits.float(), torch.from_numpy(labels))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return float(loss)

  for b in batches[:WARMUP]:
    step(*b)
  start = time.perf_counter()
  for b in batches[WARMUP:]:
    loss = step(*b)
  return time.perf_counter() - start, loss


def worker(kind, batches_path, precision, encoder, out):
  data = np.load(batches_path)
  n = int(data["n"])
  batches = [(data[f"ids{i}"], data[f"mask{i}"], data[f"labels{i}"])
             for i in range(n)]
  if kind == "ours":
    seconds, loss = ours(batches, precision, encoder)
  else:
    seconds, loss = peer(batches, precision)
  reviews = sum(len(b[2]) for b in batches[WARMUP:])
  tokens = int(sum(b[1].sum() for b in batches[WARMUP:]))
  padded = int(sum(b[1].size for b in batches[WARMUP:]))
  pathlib.Path(out).write_text(json.dumps(
      {"seconds": seconds, "reviews": reviews, "loss": loss,
       "tokens": tokens, "padded": padded}))


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "--worker":
    return worker(*argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seq-lengths", default="128,256")
  parser.add_argument("--precisions", default="float32,bfloat16")
  parser.add_argument("--steps", type=int, default=6,
                      help="timed steps (after 2 untimed ones)")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--encoder", default=str(REPO / "encoders/minilm"))
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--results-dir", default=str(REPO / "benchmarks/results"))
  args = parser.parse_args(argv)
  from train.model.bert_config import BertConfig
  info = json.loads((pathlib.Path(args.encoder) / "encoder_info.json").read_text())
  config = BertConfig.from_dict(info["bert_config"])
  described = machine.describe()  # before the runs, on a quiet machine
  print(machine.summary(described))
  report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"), "machine": described,
      "batch_size": args.batch_size, "steps": args.steps, "runs": []}
  print(f"{'':28s} {'reviews/s':>10s} {'tok/s':>8s} {'GFLOP/s':>8s} "
        f"{'×peer':>6s}  (3×forward useful FLOPs)")
  with tempfile.TemporaryDirectory() as tmp:
    for seq in [int(s) for s in args.seq_lengths.split(",")]:
      batches = make_batches(seq, args.steps + WARMUP, args.batch_size,
                             encoder=args.encoder, data_dir=args.data_dir)
      path = pathlib.Path(tmp) / f"b{seq}.npz"
      arrays = {"n": len(batches)}
      for i, (ids, mask, labels) in enumerate(batches):
        arrays.update({f"ids{i}": ids, f"mask{i}": mask, f"labels{i}": labels})
      np.savez(path, **arrays)
      flops = 3 * sum(int(n) * config.flops_per_token(int(n))
                      for _, mask, _ in batches[WARMUP:] for n in mask.sum(1))
      for precision in args.precisions.split(","):
        rates = {}
        for kind in ("ours", "peer"):
          out = pathlib.Path(tmp) / "out.json"
          env = dict(os.environ)
          if kind == "peer":  # see benchmarks/README.md: OpenMP spin-waits
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
          done = subprocess.run(
              [sys.executable, __file__, "--worker", kind, str(path),
               precision, args.encoder, str(out)],
              capture_output=True, text=True, env=env, timeout=1800)
          if done.returncode != 0:
            print(done.stderr[-3000:])
            raise SystemExit(f"{kind} {precision} {seq} failed")
          r = json.loads(out.read_text())
          rate = r["reviews"] / r["seconds"]
          rates[kind] = rate
          run = {"seq_length": seq, "precision": precision, "who": kind,
                 "reviews_per_s": rate, "tokens_per_s": r["tokens"] / r["seconds"],
                 "useful_gflops": flops / r["seconds"] / 1e9,
                 "padding_efficiency": r["tokens"] / r["padded"],
                 "final_loss": r["loss"], "seconds": r["seconds"]}
          report["runs"].append(run)
        for run in report["runs"][-2:]:
          run["vs_peer"] = run["reviews_per_s"] / rates["peer"]
          print(f"{seq:4d} {precision:9s} {run['who']:13s} "
                f"{run['reviews_per_s']:10.1f} {run['tokens_per_s']:8.0f} "
                f"{run['useful_gflops']:8.0f} {run['vs_peer']:6.2f}", flush=True)
  results = pathlib.Path(args.results_dir)
  results.mkdir(parents=True, exist_ok=True)
  (results / "train_throughput.json").write_text(json.dumps(report, indent=1))
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4))
  labels = sorted({(r["seq_length"], r["precision"]) for r in report["runs"]})
  x = np.arange(len(labels))
  for offset, who, color in ((-0.2, "ours", "#2a7"), (0.2, "peer", "#c63")):
    values = [next(r["reviews_per_s"] for r in report["runs"]
                   if (r["seq_length"], r["precision"]) == label and
                   r["who"] == who) for label in labels]
    ax.bar(x + offset, values, 0.4, label=who, color=color)
  ax.set_xticks(x, [f"{s} tok\n{p}" for s, p in labels])
  ax.set_ylabel("training reviews/s")
  ax.legend()
  ax.set_title(f"training throughput, batch {args.batch_size}, {report['date']}")
  fig.tight_layout()
  fig.savefig(results / "train_throughput.png", dpi=110)
  print(f"wrote {results / 'train_throughput.json'} and "
        f"{results / 'train_throughput.png'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
