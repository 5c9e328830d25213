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
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine, tables, throughput  # noqa: E402
from pipeline.settings import DEFAULTS as PIPELINE_DEFAULTS  # noqa: E402
from schemas import model_dir as contract  # noqa: E402

CONTENDERS = ("ours", "torch-bf16", "torch-compile", "ort-fp32", "ort-int8")
REFERENCE = tables.REFERENCE
PEER_BATCHES = (8, 16, 32, 64)
PEER_THREADS = (1, 2)
OURS_BATCH = PIPELINE_DEFAULTS["max_batch_size"]  # the product's default
REPLY = "@@reply "


# ----------------------------------------------------------------------------
# Contenders (each runs in its own process: `peers.py --worker KIND ...`)


def sorted_batches(lengths, batch):
  order = np.argsort(lengths, kind="stable")
  return [order[i:i + batch] for i in range(0, len(order), batch)]


def padded(tokens, rows):
  length = max(len(tokens[r]) for r in rows)
  ids = np.zeros((len(rows), length), np.int64)
  mask = np.zeros((len(rows), length), np.int64)
  for j, r in enumerate(rows):
    ids[j, :len(tokens[r])] = tokens[r]
    mask[j, :len(tokens[r])] = 1
  return ids, mask


def torch_scorer(model_dir, *, attention="sdpa"):
  """BertModel + mean pooling + linear head with the fine-tuned weights."""
  import torch
  import transformers
  from train.encoders.hf_checkpoint import minilm_directory

  class Scorer(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.bert = transformers.BertModel.from_pretrained(
          str(minilm_directory()), add_pooling_layer=False,
          attn_implementation=attention)
      self.head = torch.nn.Linear(self.bert.config.hidden_size, 1)

    def forward(self, input_ids, attention_mask):
      hidden = self.bert(input_ids=input_ids,
                         attention_mask=attention_mask).last_hidden_state
      mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
      pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
      return self.head(pooled).squeeze(-1).float()

  scorer = Scorer().eval()
  weights = dict(np.load(pathlib.Path(model_dir) / "hf_weights.npz"))
  scorer.head.weight.data = torch.from_numpy(weights.pop("head.weight"))
  scorer.head.bias.data = torch.from_numpy(weights.pop("head.bias"))
  # Mean pooling: the [CLS] pooler's weights are not used.
  missing, unexpected = scorer.bert.load_state_dict(
      {k: torch.from_numpy(v) for k, v in weights.items()
       if not k.startswith("pooler.")}, strict=False)
  missing = [m for m in missing if not m.endswith("position_ids")]
  if missing or unexpected:
    raise RuntimeError(f"weights do not match: {missing} {unexpected}")
  return scorer


class TorchContender:

  def __init__(self, model_dir, compiled):
    import torch
    self.torch = torch
    self.model = torch_scorer(model_dir).to(torch.bfloat16)
    self.info = {"torch": torch.__version__}
    if compiled:
      import torch._inductor.config as inductor
      inductor.freezing = True
      self.model = torch.compile(self.model, dynamic=True)

  def warm_up(self, tokens):
    """Every batch size of the sweep over every length once, untimed: the
    compiler specialises on some sizes (1, and the first it sees) and
    compiles a shape-generic graph at the next; no sweep pays for it."""
    start = time.perf_counter()
    lengths = [len(t) for t in tokens]
    for batch in (1,) + PEER_BATCHES:
      self.score(tokens, sorted_batches(lengths, batch))
    return time.perf_counter() - start

  def configure(self, threads):
    self.torch.set_num_threads(threads)

  def score(self, tokens, batches):
    logits = np.zeros(len(tokens), np.float32)
    with self.torch.inference_mode():
      for rows in batches:
        ids, mask = padded(tokens, rows)
        out = self.model(self.torch.from_numpy(ids), self.torch.from_numpy(mask))
        logits[rows] = out.numpy()
    return logits


def export_onnx(model_dir, folder):
  """ort-fp32 and ort-int8 graphs of the model in `model_dir`, cached."""
  import onnxruntime
  from onnxruntime.quantization import QuantType, quantize_dynamic
  from onnxruntime.transformers.optimizer import optimize_model
  folder = pathlib.Path(folder)
  stamp = (pathlib.Path(model_dir) / "hf_weights.npz").stat().st_mtime_ns
  done = folder / f"done-{stamp}-{onnxruntime.__version__}"
  graphs = {"ort-fp32": folder / "model-opt.onnx",
            "ort-int8": folder / "model-opt-int8.onnx"}
  if done.exists():
    return graphs
  import warnings

  import onnx
  import torch
  for stale in folder.glob("done-*"):  # another export's: the graphs change
    stale.unlink()
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  warnings.filterwarnings("ignore", module="torch.onnx")
  warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
  folder.mkdir(parents=True, exist_ok=True)
  # The eager attention exports as the MatMul/Softmax pattern that the
  # optimizer fuses into one Attention operator.
  scorer = torch_scorer(model_dir, attention="eager")
  ids = torch.ones((2, 16), dtype=torch.int64)
  raw = folder / "model.onnx"
  torch.onnx.export(
      scorer, (ids, torch.ones_like(ids)), str(raw),
      input_names=["input_ids", "attention_mask"], output_names=["logit"],
      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "logit": {0: "batch"}},
      opset_version=17, dynamo=False)
  config = scorer.bert.config
  optimized = optimize_model(str(raw), model_type="bert",
                             num_heads=config.num_attention_heads,
                             hidden_size=config.hidden_size)
  optimized.save_model_to_file(str(graphs["ort-fp32"]))
  # The fused contrib operators (Attention, SkipLayerNorm) have no shape
  # inference: their outputs are float32.
  quantize_dynamic(str(graphs["ort-fp32"]), str(graphs["ort-int8"]),
                   weight_type=QuantType.QInt8, per_channel=False,
                   reduce_range=False,
                   extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
  done.write_text(json.dumps(optimized.get_fused_operator_statistics()))
  return graphs


class OnnxContender:

  def __init__(self, graph):
    import onnxruntime
    self.ort = onnxruntime
    self.graph = str(graph)
    self.session = None
    self.info = {"onnxruntime": onnxruntime.__version__,
                 "graph_bytes": pathlib.Path(graph).stat().st_size,
                 # export_onnx's marker (one: it removes older ones)
                 "fused": json.loads(next(
                     pathlib.Path(graph).parent.glob("done-*")).read_text())}

  def configure(self, threads):
    options = self.ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (
        self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    self.session = self.ort.InferenceSession(
        self.graph, options, providers=["CPUExecutionProvider"])

  def warm_up(self, tokens):
    start = time.perf_counter()
    self.configure(2)
    self.score(tokens, [np.arange(min(4, len(tokens)))])
    return time.perf_counter() - start

  def score(self, tokens, batches):
    logits = np.zeros(len(tokens), np.float32)
    for rows in batches:
      ids, mask = padded(tokens, rows)
      logits[rows] = self.session.run(
          None, {"input_ids": ids, "attention_mask": mask})[0]
    return logits


class OursContender:
  """The model handler as the pipeline calls it, with its defaults."""

  def __init__(self, model_dir):
    from pipeline.model_handler import TokenIdsModelHandler
    card = throughput.read_card(model_dir)
    self.handler = TokenIdsModelHandler(
        str(pathlib.Path(model_dir) / contract.SAVED_MODEL_DIR),
        signatures={"bfloat16": card.classify_signature("bfloat16")},
        precision="bfloat16",
        model_fingerprint=card.model_fingerprint,
        max_batch_size=OURS_BATCH)
    self.model = None
    import tensorflow as tf
    self.info = {"tensorflow": tf.__version__}

  def warm_up(self, tokens):
    start = time.perf_counter()
    self.model = self.handler.load_model()
    self.score(tokens, [np.arange(min(2, len(tokens)))])
    return time.perf_counter() - start

  def configure(self, threads):
    del threads  # TensorFlow sets its pools once per process; default kept.

  def batches(self, tokens, batch):
    del batch
    # The pipeline's default: sorted waves, then Beam's batching.
    return throughput.make_batches([len(t) for t in tokens], batch=OURS_BATCH,
                                   mode="waves",
                                   wave=PIPELINE_DEFAULTS["sort_wave_size"])

  def score(self, tokens, batches):
    logits = np.zeros(len(tokens), np.float32)
    for rows in batches:
      results = self.handler.run_inference(
          [{"id": int(r), "tokens": tokens[r]} for r in rows], self.model)
      for r, result in zip(rows, results):
        p = float(np.clip(result.inference["probability"], 1e-7, 1 - 1e-7))
        logits[r] = np.log(p / (1 - p))
    return logits


def make_peer(kind, model_dir, graphs_dir):
  """A peer contender; `model_dir` holds hf_weights.npz."""
  if kind.startswith("torch"):
    return TorchContender(model_dir, compiled=kind == "torch-compile")
  return OnnxContender(export_onnx(model_dir, graphs_dir)[kind])


def worker(kind, model_dir, graphs_dir):
  """Answers commands read from stdin, one JSON line each, until EOF."""
  if kind == "ours":
    throughput._without_pytorch()
    contender = OursContender(model_dir)
  else:
    contender = make_peer(kind, model_dir, graphs_dir)
  tokens_cache = {}
  for line in sys.stdin:
    command = json.loads(line)
    op = command["op"]
    if op == "tokens":
      tokens_cache[command["name"]] = throughput.read_tokens(command["path"])
      reply = {}
    elif op == "warm_up":
      reply = {"seconds": contender.warm_up(tokens_cache[command["name"]]),
               "info": contender.info}
    elif op == "score":
      tokens = tokens_cache[command["name"]]
      contender.configure(command["threads"])
      if hasattr(contender, "batches"):
        batches = contender.batches(tokens, command["batch"])
      else:
        batches = sorted_batches([len(t) for t in tokens], command["batch"])
      start = time.perf_counter()
      logits = contender.score(tokens, batches)
      reply = {"seconds": time.perf_counter() - start,
               "logits": logits.tolist()}
    elif op == "matmul_peaks":
      reply = _torch_matmul_peaks() if kind.startswith("torch") else {}
    else:
      raise ValueError(op)
    sys.stdout.write(REPLY + json.dumps(reply) + "\n")
    sys.stdout.flush()


def _torch_matmul_peaks(n=4096, reps=5):
  import torch
  torch.set_num_threads(os.cpu_count())
  return machine.torch_matmul_peaks(n=n, reps=reps)


class Worker:
  """The orchestrator's handle on one contender's process."""

  def __init__(self, kind, model_dir, graphs_dir):
    self.kind = kind
    self.process = subprocess.Popen(
        [sys.executable, __file__, "--worker", kind, str(model_dir),
         str(graphs_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

  def ask(self, **command):
    self.process.stdin.write(json.dumps(command) + "\n")
    self.process.stdin.flush()
    for line in self.process.stdout:
      if line.startswith(REPLY):
        return json.loads(line[len(REPLY):])
    raise RuntimeError(f"{self.kind} ended (exit {self.process.wait()})")

  def close(self):
    self.process.stdin.close()
    self.process.wait(timeout=60)


# ----------------------------------------------------------------------------
# The run


def _write_tokens(path, tokens):
  np.savez(path, lengths=np.array([len(t) for t in tokens]),
           flat=np.concatenate(tokens))


def _settings_for(kind):
  if kind == "ours":
    return [{"batch": OURS_BATCH, "threads": os.cpu_count()}]
  return [{"batch": b, "threads": t} for t in PEER_THREADS for b in PEER_BATCHES]


def _labels(logits, threshold):
  return (np.asarray(logits) >= np.log(threshold / (1 - threshold))).astype(np.int32)


def measure_length(seq, args, tmp, log):
  model_dir = throughput.prepare_models(
      [seq], weights_from=args.weights_from, models_dir=args.models_dir,
      log=log)[seq]
  card = throughput.read_card(model_dir)
  threshold = card.threshold
  ids, texts, gold = throughput.sample_reviews(
      args.accuracy_reviews, seed=args.seed, data_dir=args.data_dir)
  from pipeline.scoring_model import acquire_model
  model = acquire_model(str(model_dir / contract.SAVED_MODEL_DIR))
  tokens, _ = throughput.tokenize_all(model, texts)
  del model
  timed = tokens[:args.num_reviews]
  files = {}
  for name, part in (("sweep", timed[:args.sweep_reviews]), ("timed", timed),
                     ("accuracy", tokens)):
    files[name] = pathlib.Path(tmp) / f"{seq}-{name}.npz"
    _write_tokens(files[name], part)
  lengths = np.array([len(t) for t in timed])
  config = throughput.bert_config(model_dir)
  result = {"seq_length": seq, "model_fingerprint": card.model_fingerprint,
            "threshold": threshold, "num_reviews": len(timed),
            "mean_tokens": float(lengths.mean()),
            "useful_gflop_per_review":
                throughput.useful_flops(config, lengths) / len(timed) / 1e9,
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


def _cpu_ticks():
  ticks = {}
  for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
    try:
      fields = stat.read_text().rsplit(")", 1)[1].split()
      ticks[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
      pass
  return ticks


def busy_now(seconds=2.0):
  """Other processes that used at least a tenth of a core over the last
  `seconds` (a stopped or sleeping process is not busy, whatever its past)."""
  before = _cpu_ticks()
  time.sleep(seconds)
  after = _cpu_ticks()
  hz = os.sysconf("SC_CLK_TCK")
  busy = []
  for pid, ticks in after.items():
    share = (ticks - before.get(pid, ticks)) / hz / seconds
    if pid != os.getpid() and share >= 0.1:
      try:
        args = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
      except OSError:
        continue
      command = args.replace(b"\0", b" ").decode(errors="replace")
      busy.append(f"{share:.0%} {command[:120]}")
  return busy


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
  parser.add_argument("--data-dir", type=pathlib.Path, default=throughput.DATA_DIR)
  parser.add_argument("--weights-from", default=str(REPO / "models/quick"))
  parser.add_argument("--models-dir", default=str(REPO / "models"))
  parser.add_argument("--results-dir", type=pathlib.Path,
                      default=REPO / "benchmarks/results")
  args = parser.parse_args(argv)
  throughput._without_pytorch()  # the orchestrator tokenizes with TensorFlow
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
