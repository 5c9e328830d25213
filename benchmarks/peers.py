"""Our scoring against the strongest CPU peers, each tuned, interleaved.

    python benchmarks/peers.py [--num-reviews 1000] [--seq-lengths 128,512]
        [--passes 3] [--accuracy-reviews 25000] [--weights-from DIR]

Contenders, each in a process of its own that lives for the whole run (so a
compiled graph or an inference session is built once, as a server or a Beam
worker would build it), all fed the same token ids (ours) and the same
fine-tuned weights:

  ours           pipeline.model_handler.TokenIdsModelHandler with the
                 product's defaults: the bfloat16 signature, batches of 32
                 cut from the pipeline's sorted waves (its default
                 --sort_wave_size);
  torch-bf16     transformers BertModel (sdpa) + mean pooling + linear head,
                 the whole model in bfloat16 (`model.to(torch.bfloat16)`);
  torch-compile  the same under `torch.compile` (inductor, dynamic shapes,
                 weights frozen into the graph);
  ort-fp32       the same model exported to ONNX, ONNX Runtime's transformer
                 optimizer (fused attention, layer norm, GELU), float32;
  ort-int8       that graph with ONNX Runtime's dynamic int8 quantisation
                 (signed int8 weights, per tensor, no range reduction: the
                 CPU has AVX-512 VNNI).

Every peer batches as it likes best: reviews sorted by length, each batch
padded to its longest review, and gets a sweep of batch sizes and thread
counts on the first --sweep-reviews reviews; its fastest setting is kept.
Then --passes timed passes over the same --num-reviews reviews, the
contenders' order rotated each pass, so a change in the machine's speed hits
them all; each figure is the median with its range. The matmul peak (tf and
torch, 4096², best of 5) is measured beside each length. Then every
contender scores --accuracy-reviews test reviews (all 25,000 by default) at
its kept setting: accuracy, and agreement with ort-fp32, the float32
reference.

Writes benchmarks/results/peers-<length>.json for each length (the
machine and versions as benchmarks/machine.py describes them, settings,
every pass), so lengths can be measured in separate runs, then
docs/peers.md from all of them (benchmarks/tables.py).
Needs the benchmark extra (PyTorch, transformers, onnxruntime, onnx).
"""
import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine, tables  # noqa: E402
from benchmarks.peer_contenders import OURS_BATCH, PEER_BATCHES  # noqa: E402
from benchmarks.peer_workers import Worker, worker  # noqa: E402
from benchmarks.processes import busy_now, without_pytorch  # noqa: E402
from benchmarks.reviews_and_models import (DATA_DIR, bert_config,  # noqa: E402
                                           prepare_models, read_card,
                                           sample_reviews, useful_flops,
                                           write_tokens)
from benchmarks.scoring_paths import tokenize_all  # noqa: E402
from schemas import model_dir as contract  # noqa: E402
# end_to_end.py's peer process takes these from here.
from benchmarks.peer_contenders import (export_onnx,  # noqa: E402, F401
                                        make_peer, sorted_batches)

CONTENDERS = ("ours", "torch-bf16", "torch-compile", "ort-fp32", "ort-int8")
REFERENCE = tables.REFERENCE
PEER_THREADS = (1, 2)


# ----------------------------------------------------------------------------
# The run


def _settings_for(kind):
  if kind == "ours":
    return [{"batch": OURS_BATCH, "threads": os.cpu_count()}]
  return [{"batch": b, "threads": t} for t in PEER_THREADS for b in PEER_BATCHES]


def _labels(logits, threshold):
  return (np.asarray(logits) >= np.log(threshold / (1 - threshold))).astype(np.int32)


def measure_length(seq, args, tmp, log):
  model_dir = prepare_models(
      [seq], weights_from=args.weights_from, models_dir=args.models_dir,
      log=log)[seq]
  card = read_card(model_dir)
  threshold = card.threshold
  ids, texts, gold = sample_reviews(
      args.accuracy_reviews, seed=args.seed, data_dir=args.data_dir)
  from pipeline.scoring_model import acquire_model
  model = acquire_model(str(model_dir / contract.SAVED_MODEL_DIR))
  tokens, _ = tokenize_all(model, texts)
  del model
  timed = tokens[:args.num_reviews]
  files = {}
  for name, part in (("sweep", timed[:args.sweep_reviews]), ("timed", timed),
                     ("accuracy", tokens)):
    files[name] = pathlib.Path(tmp) / f"{seq}-{name}.npz"
    write_tokens(files[name], part)
  lengths = np.array([len(t) for t in timed])
  config = bert_config(model_dir)
  result = {"seq_length": seq, "model_fingerprint": card.model_fingerprint,
            "threshold": threshold, "num_reviews": len(timed),
            "mean_tokens": float(lengths.mean()),
            "useful_gflop_per_review":
                useful_flops(config, lengths) / len(timed) / 1e9,
            "contenders": {}}
  workers = {}
  for kind in args.contenders:
    log(f"[{seq}] starting {kind} ...")
    w = Worker(kind, model_dir, pathlib.Path(args.models_dir) / f"onnx-{seq}")
    for name, path in files.items():
      w.ask(op="tokens", name=name, path=str(path))
    warm = w.ask(op="warm_up", name="sweep")
    workers[kind] = w
    entry = result["contenders"][kind] = {
        "warm_up_seconds": warm["seconds"], "info": warm["info"], "sweep": []}
    for setting in _settings_for(kind):
      seconds = w.ask(op="score", name="sweep", **setting)["seconds"]
      entry["sweep"].append(dict(setting, reviews_per_s=args.sweep_reviews / seconds))
      log(f"[{seq}] {kind} sweep {setting}: "
          f"{args.sweep_reviews / seconds:.1f} reviews/s")
    entry["setting"] = max(entry["sweep"], key=lambda s: s["reviews_per_s"])
    entry["setting"] = {k: entry["setting"][k] for k in ("batch", "threads")}
  peaks = machine.tf_matmul_peaks(n=4096, reps=5, xla=True)
  torch_peaks = next((w.ask(op="matmul_peaks") for k, w in workers.items()
                      if k.startswith("torch")), {})
  result["matmul_gflops"] = {"tensorflow": peaks, "torch": torch_peaks}
  order = list(args.contenders)
  for p in range(args.passes):
    for kind in order:
      entry = result["contenders"][kind]
      reply = workers[kind].ask(op="score", name="timed", **entry["setting"])
      entry.setdefault("passes", []).append(
          {"pass": p, "seconds": reply["seconds"],
           "reviews_per_s": len(timed) / reply["seconds"],
           "load_average": os.getloadavg()[0]})
      log(f"[{seq}] pass {p + 1} {kind}: "
          f"{len(timed) / reply['seconds']:.1f} reviews/s")
    order = order[1:] + order[:1]
  for kind in args.contenders:
    if args.accuracy_reviews <= 0:
      break
    entry = result["contenders"][kind]
    reply = workers[kind].ask(op="score", name="accuracy", **entry["setting"])
    labels = _labels(reply["logits"], threshold)
    entry["accuracy_run"] = {
        "reviews": len(tokens), "seconds": reply["seconds"],
        "accuracy": float(np.mean(labels == gold)), "labels": labels.tolist()}
    log(f"[{seq}] {kind}: accuracy {entry['accuracy_run']['accuracy']:.4%} "
        f"on {len(tokens):,} reviews ({len(tokens) / reply['seconds']:.1f}/s)")
  for w in workers.values():
    w.close()
  reference = result["contenders"].get(REFERENCE, {}).get("accuracy_run")
  for entry in result["contenders"].values():
    run = entry.get("accuracy_run")
    if run and reference:
      entry["agreement_with_float32"] = float(np.mean(
          np.asarray(run["labels"]) == np.asarray(reference["labels"])))
      entry["accuracy_minus_float32"] = run["accuracy"] - reference["accuracy"]
  for entry in result["contenders"].values():
    entry.get("accuracy_run", {}).pop("labels", None)
  result["others_busy"] = busy_now()
  return result


def summarise(result):
  """Medians, ranges and ratios from the raw passes (in place)."""
  contenders = result["contenders"]
  for entry in contenders.values():
    rates = [p["reviews_per_s"] for p in entry["passes"]]
    entry["median_reviews_per_s"] = statistics.median(rates)
    entry["range_reviews_per_s"] = [min(rates), max(rates)]
    entry["useful_gflops"] = (entry["median_reviews_per_s"]
                              * result["useful_gflop_per_review"])
  peers = {k: e for k, e in contenders.items() if k != "ours"}
  eligible = {k: e for k, e in peers.items()
              if abs(e.get("accuracy_minus_float32", 0.0)) <= 0.002}
  if "ours" in contenders and eligible:
    fastest = max(eligible, key=lambda k: eligible[k]["median_reviews_per_s"])
    result["fastest_eligible_peer"] = fastest
    result["ours_vs_fastest_eligible"] = (
        contenders["ours"]["median_reviews_per_s"]
        / eligible[fastest]["median_reviews_per_s"])
  return result


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "--worker":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return worker(*argv[1:])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num-reviews", type=int, default=1000)
  parser.add_argument("--sweep-reviews", type=int, default=256)
  parser.add_argument("--accuracy-reviews", type=int, default=25000,
                      help="test reviews each contender scores for accuracy "
                      "(0: none)")
  parser.add_argument("--passes", type=int, default=3)
  parser.add_argument("--seq-lengths", default="128,512")
  parser.add_argument("--contenders", default=",".join(CONTENDERS))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--weights-from", default=str(REPO / "models/quick"))
  parser.add_argument("--models-dir", default=str(REPO / "models"))
  parser.add_argument("--results-dir", type=pathlib.Path,
                      default=REPO / "benchmarks/results")
  args = parser.parse_args(argv)
  without_pytorch()  # the orchestrator tokenizes with TensorFlow
  args.contenders = args.contenders.split(",")
  args.accuracy_reviews = max(args.accuracy_reviews, args.num_reviews)
  args.results_dir.mkdir(parents=True, exist_ok=True)
  header = {"command": "python benchmarks/peers.py " + " ".join(argv),
            "machine": machine.describe(),
            "settings": {k: (str(v) if isinstance(v, pathlib.Path) else v)
                         for k, v in vars(args).items()}}
  with tempfile.TemporaryDirectory() as tmp:
    for seq in (int(s) for s in args.seq_lengths.split(",")):
      date = datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="minutes")
      result = summarise(measure_length(seq, args, tmp, print))
      path = args.results_dir / f"peers-{seq}.json"
      path.write_text(json.dumps(dict(header, date=date, result=result),
                                 indent=1))
      print(f"wrote {path}")
  for path in tables.write_tables(args.results_dir, tables.DOCS):
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
