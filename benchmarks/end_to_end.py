"""Whole-process scoring time with every default, beside a peer's script.

    python benchmarks/end_to_end.py --model models/bench-128 \
        [--peer torch-bf16|torch-fp32|torch-compile|ort-fp32|ort-int8]
        [--sizes 25000]
        [--passes 3]

What a user sees: `reviewscore score --input X --model M --output O` with no
other flag, timed from process start to exit (imports, model load,
tokenization, Beam, Parquet out, manifest), against the script a user would
write around one of benchmarks/peers.py's peers (the same weights): read the
same Parquet, tokenize with the checkpoint's fast tokenizer (truncated to
the model's length, from the head), sort by length, batches padded to their
longest review, score, write Parquet; also timed as a whole process, with
the batch size and thread count its sweep in peers-<length>.json chose (an
ONNX graph is exported beforehand, untimed, as a user exports once). Passes
alternate (ours, peer, ours, peer...) so that a change in the machine's
speed hits both. Prints each time and the ratio; writes
benchmarks/results/end_to_end-<length>.json (-<length>-<peer>-<cpu>.json
for a peer other than torch-bf16) with every pass, the medians and the
machine (benchmarks/machine.py: CPU, flags, matmul peaks, versions).
"""
import argparse
import datetime
import json
import os
import pathlib
import shutil
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


def export_hf_weights(model_dir: pathlib.Path, path: pathlib.Path) -> None:
  """The model's trained weights under Hugging Face BertModel names."""
  os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
  import tensorflow as tf
  from benchmarks.reviews_and_models import read_card, save_hf_weights
  from train.model.classifier import build_classifier
  from train.encoders.source import resolve_encoder
  card = read_card(model_dir)
  source = resolve_encoder(card.encoder["name"])
  model = build_classifier(source, precision="float32", pooling=card.pooling,
                           restore_encoder=False)
  tf.train.Checkpoint(model=model).read(
      str(model_dir / "best" / "weights")
  ).expect_partial().assert_existing_objects_matched()
  save_hf_weights(model, path)


def peer_main(kind, weights_dir, seq_length, input_path, output_path, batch,
              threads):
  """The peer, as its own process (started and timed by `timed`): a script
  a user would write around one of benchmarks/peers.py's peers."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  import transformers
  from benchmarks import peers
  from train.encoders.hf_checkpoint import minilm_directory
  peer = peers.make_peer(kind, weights_dir, pathlib.Path(weights_dir) / "onnx")
  peer.configure(int(threads))
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_directory()))
  table = pq.read_table(input_path, columns=["review_id", "text"])
  encoded = tokenizer(table["text"].to_pylist(), truncation=True,
                      max_length=int(seq_length))["input_ids"]
  tokens = [np.asarray(e, np.int64) for e in encoded]
  logits = peer.score(tokens, peers.sorted_batches([len(t) for t in tokens],
                                                   int(batch)))
  scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
  pq.write_table(pa.table({"review_id": table["review_id"],
                           "score": pa.array(scores.astype(np.float32)),
                           "label_id": pa.array((scores >= 0.5).astype(np.int8))}),
                 output_path)


def peer_setting(kind, seq_length, results_dir):
  """The peer's fastest batch size and thread count from peers.py's sweep at
  this length, else batches of 32 on every core."""
  path = pathlib.Path(results_dir) / f"peers-{seq_length}.json"
  if path.exists():
    entry = json.loads(path.read_text())["result"]["contenders"].get(kind)
    if entry:
      return entry["setting"]
  return {"batch": 32, "threads": os.cpu_count()}


def timed(command, env=None):
  start = time.perf_counter()
  done = subprocess.run(command, capture_output=True, text=True, env=env)
  seconds = time.perf_counter() - start
  if done.returncode != 0:
    raise RuntimeError(f"{command[:3]} failed:\n{done.stderr[-3000:]}")
  return seconds, done


def accuracy(scores_files, truth):
  import pyarrow.compute as pc
  import pyarrow.parquet as pq
  scores = pq.read_table(scores_files, columns=["review_id", "label_id"])
  joined = scores.join(truth, "review_id")
  return pc.mean(pc.equal(pc.cast(joined["label_id"], "int64"),
                          pc.cast(joined["label"], "int64"))).as_py()


def medians(rows):
  """Per size: median seconds of each side and of the per-pass ratio."""
  import statistics
  out = []
  for size in sorted({r["reviews"] for r in rows}):
    passes = [r for r in rows if r["reviews"] == size]
    ratios = [r["ours_per_peer"] for r in passes]
    out.append({"reviews": size, "passes": len(passes),
                "ours_seconds": statistics.median(r["ours_seconds"] for r in passes),
                "peer_seconds": statistics.median(r["peer_seconds"] for r in passes),
                "ours_per_peer": statistics.median(ratios),
                "ours_per_peer_range": [min(ratios), max(ratios)],
                "ours_accuracy": passes[0]["ours_accuracy"],
                "peer_accuracy": passes[0]["peer_accuracy"]})
  return out


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "--peer":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return peer_main(*argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", type=pathlib.Path, default=REPO / "models/quick")
  parser.add_argument("--sizes", default="5000,25000")
  parser.add_argument("--passes", type=int, default=1)
  parser.add_argument("--peer", dest="peer_kind", default="torch-bf16",
                      choices=["torch-bf16", "torch-fp32", "torch-compile",
                               "ort-fp32", "ort-int8"],
                      help="which of benchmarks/peers.py's peers to run as a "
                      "whole-process script")
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--results-dir", type=pathlib.Path,
                      default=REPO / "benchmarks/results")
  args = parser.parse_args(argv)
  described = machine.describe()  # before the runs, on a quiet machine
  print(machine.summary(described), flush=True)
  import pyarrow.parquet as pq
  from benchmarks.throughput import read_card
  card = read_card(args.model)
  test = pq.read_table(args.data_dir / "test.parquet",
                       columns=["review_id", "text", "label"])
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    weights = tmp / "hf_weights.npz"
    if (args.model / "hf_weights.npz").exists():  # a benchmarks/ model
      shutil.copy(args.model / "hf_weights.npz", weights)
    else:
      export_hf_weights(args.model, weights)
    setting = peer_setting(args.peer_kind, card.seq_length,
                           args.results_dir)
    if args.peer_kind.startswith("ort"):  # a user exports once, untimed
      from benchmarks.peers import export_onnx
      export_onnx(tmp, tmp / "onnx")
    for size in [int(s) for s in args.sizes.split(",")]:
      picked = np.random.default_rng(0).choice(test.num_rows, size,
                                               replace=False)
      subset = test.take(np.sort(picked))
      input_path = tmp / f"reviews-{size}.parquet"
      pq.write_table(subset, input_path)
      truth = subset.select(["review_id", "label"])
      for n in range(args.passes):
        ours_prefix = tmp / f"ours-{size}-{n}" / "scores"
        ours, _ = timed([str(REPO / ".venv/bin/reviewscore"), "score",
                         "--input", str(input_path), "--model", str(args.model),
                         "--output", str(ours_prefix)])
        print(f"{size:>6,} reviews: reviewscore score {ours:.1f} s", flush=True)
        manifest = json.loads(pathlib.Path(f"{ours_prefix}-manifest.json")
                              .read_text())
        peer_out = tmp / f"peer-{size}-{n}.parquet"
        peer, _ = timed([sys.executable, __file__, "--peer", args.peer_kind,
                         str(tmp), str(card.seq_length), str(input_path),
                         str(peer_out), str(setting["batch"]),
                         str(setting["threads"])])
        row = {"reviews": size, "pass": n + 1, "seq_length": card.seq_length,
               "peer": args.peer_kind, "peer_setting": setting,
               "ours_seconds": round(ours, 2), "peer_seconds": round(peer, 2),
               "ours_per_peer": round(peer / ours, 3),
               "ours_precision": manifest["model"]["precision"],
               "ours_accuracy": accuracy(manifest["scores"], truth),
               "peer_accuracy": accuracy([str(peer_out)], truth)}
        rows.append(row)
        print(f"{size:>6,} reviews, {card.seq_length} tokens: reviewscore "
              f"score (defaults) {ours:6.1f} s, {args.peer_kind} {peer:6.1f} s: "
              f"{row['ours_per_peer']:.2f}x the peer's speed (accuracy "
              f"{row['ours_accuracy']:.4f} vs {row['peer_accuracy']:.4f})",
              flush=True)
  report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "machine": described,
            "model": str(args.model), "model_fingerprint":
                card.model_fingerprint,
            "command": "python benchmarks/end_to_end.py " + " ".join(argv),
            "rows": rows, "medians": medians(rows)}
  for size in report["medians"]:
    print(f"{size['reviews']:,} reviews: ours {size['ours_seconds']:.1f} s, "
          f"{args.peer_kind} {size['peer_seconds']:.1f} s (medians of "
          f"{size['passes']}): {size['ours_per_peer']:.2f}x "
          f"(range {size['ours_per_peer_range'][0]:.2f}-"
          f"{size['ours_per_peer_range'][1]:.2f})")
  name = f"end_to_end-{card.seq_length}"
  if args.peer_kind != "torch-bf16":  # the first peer kept its plain name
    name += f"-{args.peer_kind}-{machine.cpu_slug(described)}"
  results = args.results_dir / f"{name}.json"
  args.results_dir.mkdir(parents=True, exist_ok=True)
  results.write_text(json.dumps(report, indent=2))
  print(f"written to {results}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
