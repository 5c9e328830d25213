"""Whole-process scoring time with every default, beside the PyTorch peer.

    .venv/bin/python benchmarks/end_to_end.py [--model models/quick]
        [--sizes 5000,25000] [--passes 1]

What a user sees: `reviewscore score --input X --model M --output O` with no
other flag, timed from process start to exit (imports, model load,
tokenization, Beam, Parquet out, manifest), against a script a user would
write with Hugging Face transformers on PyTorch: read the same Parquet,
tokenize with the checkpoint's fast tokenizer (truncated to the model's
length), sort by length, batches of 32 padded to their longest review, bf16
autocast, inference_mode, write Parquet; also timed as a whole process, with
the same fine-tuned weights. Passes alternate (ours, peer, ours, peer...) so
that a change in the machine's speed hits both. Prints each time and the
ratio; writes benchmarks/results/end_to_end.json.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from schemas import model_dir as contract  # noqa: E402

DATA_DIR = REPO.parent / "shared" / "data" / "imdb"


def export_hf_weights(model_dir: pathlib.Path, path: pathlib.Path) -> None:
  """The model's trained weights under Hugging Face BertModel names."""
  os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
  import tensorflow as tf
  from benchmarks.throughput import _save_hf_weights
  from train.classifier import build_classifier
  from train.encoders import resolve_encoder
  card = json.loads((model_dir / contract.MODEL_CARD_FILE).read_text())
  source = resolve_encoder(card["encoder"]["name"])
  model = build_classifier(source, precision="float32", pooling=card["pooling"],
                           restore_encoder=False)
  tf.train.Checkpoint(model=model).read(
      str(model_dir / "best" / "weights")
  ).expect_partial().assert_existing_objects_matched()
  _save_hf_weights(model, path)


def peer_main(weights, seq_length, input_path, output_path):
  """The peer, as its own process (started and timed by `timed`)."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  import torch
  import transformers
  from train.hf_checkpoint import minilm_directory
  torch.set_num_threads(os.cpu_count() or 1)
  seq_length = int(seq_length)
  directory = str(minilm_directory())
  tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
  bert = transformers.BertModel.from_pretrained(directory).eval()
  state = dict(np.load(weights))
  head = torch.nn.Linear(bert.config.hidden_size, 1)
  head.weight.data = torch.from_numpy(state.pop("head.weight"))
  head.bias.data = torch.from_numpy(state.pop("head.bias"))
  missing, unexpected = bert.load_state_dict(
      {k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
  missing = [m for m in missing if not m.endswith("position_ids")]
  if missing or unexpected:
    raise RuntimeError(f"weights do not match: {missing} {unexpected}")
  table = pq.read_table(input_path, columns=["review_id", "text"])
  texts = table["text"].to_pylist()
  encoded = tokenizer(texts, truncation=True, max_length=seq_length)["input_ids"]
  lengths = np.array([len(e) for e in encoded])
  order = np.argsort(lengths, kind="stable")
  scores = np.zeros(len(texts), np.float32)
  with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    for start in range(0, len(order), 32):
      rows = order[start:start + 32]
      width = int(lengths[rows].max())
      ids = torch.zeros((len(rows), width), dtype=torch.long)
      mask = torch.zeros((len(rows), width), dtype=torch.long)
      for j, r in enumerate(rows):
        ids[j, :lengths[r]] = torch.tensor(encoded[r])
        mask[j, :lengths[r]] = 1
      hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
      m = mask.unsqueeze(-1).to(hidden.dtype)
      pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
      logits = head(pooled.float()).squeeze(-1).float()
      scores[rows] = torch.sigmoid(logits).numpy()
  pq.write_table(pa.table({"review_id": table["review_id"],
                           "score": pa.array(scores),
                           "label_id": pa.array((scores >= 0.5).astype(np.int8))}),
                 output_path)


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


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "--peer":
    return peer_main(*argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", type=pathlib.Path, default=REPO / "models/quick")
  parser.add_argument("--sizes", default="5000,25000")
  parser.add_argument("--passes", type=int, default=1)
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--results", type=pathlib.Path,
                      default=REPO / "benchmarks/results/end_to_end.json")
  args = parser.parse_args(argv)
  import pyarrow.parquet as pq
  card = json.loads((args.model / contract.MODEL_CARD_FILE).read_text())
  test = pq.read_table(args.data_dir / "test.parquet",
                       columns=["review_id", "text", "label"])
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    weights = tmp / "hf_weights.npz"
    export_hf_weights(args.model, weights)
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
        peer, _ = timed([sys.executable, __file__, "--peer", str(weights),
                         str(card["seq_length"]), str(input_path),
                         str(peer_out)])
        row = {"reviews": size, "pass": n + 1, "seq_length": card["seq_length"],
               "ours_seconds": round(ours, 2), "peer_seconds": round(peer, 2),
               "ours_per_peer": round(peer / ours, 3),
               "ours_precision": manifest["model"]["precision"],
               "ours_accuracy": accuracy(manifest["scores"], truth),
               "peer_accuracy": accuracy([str(peer_out)], truth)}
        rows.append(row)
        print(f"{size:>6,} reviews, {card['seq_length']} tokens: reviewscore "
              f"score (defaults) {ours:6.1f} s, PyTorch peer {peer:6.1f} s: "
              f"{row['ours_per_peer']:.2f}x the peer's speed (accuracy "
              f"{row['ours_accuracy']:.4f} vs {row['peer_accuracy']:.4f})",
              flush=True)
  import torch
  import transformers
  report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "model": str(args.model), "model_fingerprint":
                card["model_fingerprint"],
            "versions": {"torch": torch.__version__,
                         "transformers": transformers.__version__},
            "rows": rows}
  args.results.parent.mkdir(parents=True, exist_ok=True)
  args.results.write_text(json.dumps(report, indent=2))
  print(f"written to {args.results}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
