"""The engines a model can score in, side by side on this CPU, in one run.

    python benchmarks/int8_runtime.py --model models/quick [--reviews 2000]
        [--passes 2] [--end-to-end 2000]
    python benchmarks/int8_runtime.py --tables    # docs/engines.md only

Model call alone, the same token ids (the model's own tokenizer) in the same
length-sorted batches of the pipeline's default size, each engine warmed up
on one batch, then --passes timed passes with the engines' order rotated
each pass (a change in the machine's speed hits them all):

  tensorflow-float32  the SavedModel's float32 classify signature: what
                      `--precision float32` scores with;
  tensorflow-bfloat16 its bfloat16 signature, where the CPU computes
                      bfloat16 natively (emulated elsewhere: not run);
  openvino-float32    that float32 signature converted to OpenVINO here;
  openvino-int8       the model's int8 copy (`reviewscore train` makes it);
  pytorch-float32     the peer: transformers' BertModel with the same
                      fine-tuned weights, float32, in a process of its own
                      (its OpenMP threads would stall the others), fed the
                      same batches (MiniLM-based models only).

Each engine's accuracy on those reviews and its agreement with
tensorflow-float32 are reported beside its speed. With --end-to-end N,
whole `reviewscore score` processes on N test reviews written as Parquet,
alternated --passes times: every default (auto) against --precision float32
and --precision int8, reading, tokenizing and writing included.

Records the machine (benchmarks/machine.py: the CPU's model, family and
flags that matter, TensorFlow's matmul peaks, versions) beside the results
in benchmarks/results/int8_runtime-<cpu>.json: results from different CPUs
are kept apart.
"""
import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine, throughput  # noqa: E402
from pipeline.settings import DEFAULTS as PIPELINE_DEFAULTS  # noqa: E402
from schemas import model_dir as contract  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
BATCH = PIPELINE_DEFAULTS["max_batch_size"]
REFERENCE = "tensorflow-float32"


def length_sorted_batches(tokens, batch=BATCH):
  from pipeline.model_handler import pad_batch
  order = np.argsort([len(t) for t in tokens], kind="stable")
  return [(rows, *pad_batch([tokens[i] for i in rows]))
          for rows in (order[s:s + batch] for s in range(0, len(order), batch))]


def engines(model_dir: pathlib.Path, card: contract.ModelCard, native_bf16,
            calibration_ids, folder: pathlib.Path, log):
  """name -> (ids, mask) -> probability/label outputs; with skipped ones."""
  from benchmarks import int8_candidates
  from engines import openvino_classifier as engine
  from pipeline.scoring_model import acquire_model
  saved = acquire_model(str(model_dir / contract.SAVED_MODEL_DIR))
  found, skipped = {}, {}
  for precision in ("float32", "bfloat16"):
    if precision not in card.precisions:
      skipped[f"tensorflow-{precision}"] = "the model has no such signature"
    elif precision == "bfloat16" and not native_bf16:
      skipped["tensorflow-bfloat16"] = "emulated on this CPU"
    else:
      signature = card.classify_signature(precision)
      found[f"tensorflow-{precision}"] = (
          lambda ids, mask, s=signature: saved.classify(s, ids, mask))
  copies = card.copies
  if "float32" in copies:  # the copy scoring uses
    xml = model_dir / copies["float32"].folder / copies["float32"].model_file
  else:
    xml = folder / "openvino-float32.xml"
    if not xml.exists():
      engine.save(engine.convert_signature(
          None, card.classify_signature("float32"), module=saved.module),
          str(xml))
  found["openvino-float32"] = engine.Classifier(xml).classify
  if native_bf16:
    found["openvino-bfloat16"] = _openvino_in(xml, "bf16")
  else:
    skipped["openvino-bfloat16"] = "emulated on this CPU"
  own = copies.get(contract.INT8)
  if own is not None and own.engine == contract.OPENVINO:
    found["openvino-int8 (the model's copy)"] = engine.Classifier(
        model_dir / own.folder / own.model_file).classify
  found.update(int8_candidates.candidates(
      model_dir, card, saved.module, calibration_ids, folder, log=log))
  return saved, found, skipped


def _openvino_in(xml, precision_hint: str):
  """The float32 copy compiled to compute in `precision_hint` (bf16)."""
  import openvino as ov

  from engines import openvino_classifier as engine
  core = ov.Core()
  compiled = core.compile_model(core.read_model(str(xml)), engine.DEVICE, {
      **engine.COMPILE_OPTIONS, "INFERENCE_PRECISION_HINT": precision_hint})
  request = compiled.create_infer_request()
  names = {port: next(iter(port.get_names()), None) for port in compiled.outputs}

  def classify(ids, mask):
    results = request.infer({contract.TOKEN_IDS: ids, contract.TOKEN_MASK: mask})
    return {name: np.array(results[port]) for port, name in names.items()
            if name}
  return classify


def calibration_token_ids(saved, data_dir: pathlib.Path, count: int, seed=7):
  """Token ids of `count` training reviews (NNCF's calibration)."""
  import pyarrow.parquet as pq
  texts = pq.read_table(data_dir / "train.parquet", columns=["text"])["text"]
  rows = np.random.default_rng(seed).choice(len(texts), count, replace=False)
  ids, counts = saved.tokenize([texts[int(i)].as_py() for i in rows])
  return [row[:int(n)] for row, n in zip(ids, counts)]


PEER = "pytorch-float32"
# The whole-process baseline: --precision float32 on the model without its
# OpenVINO copies, i.e. TensorFlow's float32 pipeline.
TENSORFLOW_ONLY = "tensorflow-float32"


def pytorch_weights(model_dir: pathlib.Path, folder: pathlib.Path
                    ) -> pathlib.Path:
  """A folder with the model's weights under transformers' names."""
  from benchmarks.end_to_end import export_hf_weights
  if not (model_dir / "hf_weights.npz").exists():  # not a benchmarks/ model
    export_hf_weights(model_dir, folder / "hf_weights.npz")
    return folder
  return model_dir


def pytorch_pass(weights_dir, token_ids, seq_length, threshold):
  """(seconds, labels) of one PyTorch float32 pass in its own process,
  decided at the model's threshold as ours are."""
  from benchmarks.torch_peer import run_peer
  result = run_peer(weights_dir, token_ids, ["f32_sorted"], batch=BATCH,
                    seq_len=seq_length)["f32_sorted"]
  probability = 1 / (1 + np.exp(-np.asarray(result["logits"], np.float64)))
  return result["seconds"], (probability >= threshold).astype(np.int32)


def model_call_pass(fn, batches, n):
  labels = np.empty(n, np.int32)
  start = time.perf_counter()
  for rows, ids, mask in batches:
    labels[rows] = fn(ids, mask)[contract.OUTPUT_LABEL_ID]
  return time.perf_counter() - start, labels


def without_copies(model_dir: pathlib.Path, target: pathlib.Path
                   ) -> pathlib.Path:
  """The model as TensorFlow alone scores it: its SavedModel and a card
  that offers no OpenVINO copy (what every model was before the copies)."""
  target.mkdir(parents=True)
  (target / contract.SAVED_MODEL_DIR).symlink_to(
      (model_dir / contract.SAVED_MODEL_DIR).resolve())
  card = json.loads((model_dir / contract.MODEL_CARD_FILE).read_text())
  card.update(int8=None, float32_copy=None, tokenizer_copy=None)
  (target / contract.MODEL_CARD_FILE).write_text(json.dumps(card))
  return target


def without_tokenizer_copy(model_dir: pathlib.Path, target: pathlib.Path
                           ) -> pathlib.Path:
  """The model with its int8 and float32 copies but not its tokenizer copy
  (as models were made before 2026-12-08's second session): its workers
  load TensorFlow to tokenize."""
  target.mkdir(parents=True)
  for folder in (contract.SAVED_MODEL_DIR, contract.INT8_COPY_DIR,
                 contract.FLOAT32_COPY_DIR):
    if (model_dir / folder).exists():
      (target / folder).symlink_to((model_dir / folder).resolve())
  card = json.loads((model_dir / contract.MODEL_CARD_FILE).read_text())
  card.update(tokenizer_copy=None)
  (target / contract.MODEL_CARD_FILE).write_text(json.dumps(card))
  return target


ORT_SCRIPT = "ort-int8-script"
# --precision int8 on the model without its tokenizer copy.
INT8_SIGNATURE_TOKENIZER = "int8-signature-tokenizer"


def end_to_end(model_dir, parquet, passes, log, *, int8: bool,
               ort_script: bool = False):
  """Whole `reviewscore score` processes, alternated (with the plain ONNX
  Runtime script around the model's int8 copy, benchmarks/ort_script.py)."""
  variants = {"auto": [], "float32": ["--precision", "float32"]}
  if int8:
    variants["int8"] = ["--precision", "int8"]
  tokenizer_copy = bool((json.loads((model_dir / contract.MODEL_CARD_FILE)
                                    .read_text()).get("tokenizer_copy") or {})
                        .get("offered"))
  if int8 and tokenizer_copy:
    variants[INT8_SIGNATURE_TOKENIZER] = ["--precision", "int8"]
  variants[TENSORFLOW_ONLY] = ["--precision", "float32"]
  if ort_script:
    variants[ORT_SCRIPT] = None
  seconds = {name: [] for name in variants}
  chosen, accuracy = {}, {}
  import pyarrow.parquet as pq
  truth = dict(zip(*pq.read_table(parquet, columns=["review_id", "label"]
                                  ).to_pydict().values()))
  reviewscore = pathlib.Path(sys.executable).parent / "reviewscore"
  with tempfile.TemporaryDirectory() as tmp:
    plain = without_copies(model_dir, pathlib.Path(tmp) / "tensorflow-only")
    models = {TENSORFLOW_ONLY: plain}
    if INT8_SIGNATURE_TOKENIZER in variants:
      models[INT8_SIGNATURE_TOKENIZER] = without_tokenizer_copy(
          model_dir, pathlib.Path(tmp) / "signature-tokenizer")
    for attempt in range(passes):
      for name, extra in variants.items():
        out = pathlib.Path(tmp) / f"{name}-{attempt}"
        model = models.get(name, model_dir)
        if name == ORT_SCRIPT:
          command = [sys.executable, str(REPO / "benchmarks" / "ort_script.py"),
                     str(model), str(parquet), f"{out}.parquet"]
        else:
          command = [str(reviewscore), "score", "--input", str(parquet),
                     "--model", str(model), "--output", str(out), *extra]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        seconds[name].append(time.perf_counter() - start)
        if name == ORT_SCRIPT:
          chosen[name] = "int8: the model's copy, ONNX Runtime"
          scored = pq.read_table(f"{out}.parquet")
        else:
          manifest = json.loads(pathlib.Path(f"{out}-manifest.json").read_text())
          chosen[name] = manifest["model"]["precision"].get(
              "why", manifest["model"]["precision"]["used"])
          scored = pq.read_table(manifest["scores"])
        decided = dict(zip(scored["review_id"].to_pylist(),
                           scored["label_id"].to_pylist()))
        accuracy[name] = float(np.mean([decided[k] == v
                                        for k, v in truth.items()]))
        log(f"  end to end {name}: {seconds[name][-1]:.1f}s ({chosen[name]})")
  return {name: {"seconds": s, "best_s": min(s), "precision": chosen[name],
                 "accuracy": accuracy[name]}
          for name, s in seconds.items()}


def startup(model_dir, parquet, passes, log, *, int8: bool):
  """One-review `reviewscore score` processes: seconds from launch to the
  first scored review and to exit, for every default and, where the model
  has the copy, --precision int8 (medians of `passes`)."""
  import statistics

  from benchmarks.scale import measure, score_command
  variants = {"auto": []}
  if int8:
    variants["int8"] = ["--precision", "int8"]
  runs = {name: [] for name in variants}
  with tempfile.TemporaryDirectory() as tmp:
    for attempt in range(passes):
      for name, extra in variants.items():
        out = pathlib.Path(tmp) / f"{name}-{attempt}" / "scores"
        runs[name].append(measure(score_command(parquet, model_dir, out,
                                                *extra), log,
                                  first_scored=True))
        log(f"  one review, {name}: first scored after "
            f"{runs[name][-1]['seconds_to_first_scored']:.2f} s, whole "
            f"process {runs[name][-1]['seconds']:.2f} s")
  return {name: {
      "seconds_to_first_scored": statistics.median(
          r["seconds_to_first_scored"] for r in rows),
      "seconds": statistics.median(r["seconds"] for r in rows),
      "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rows),
      "passes": len(rows)} for name, rows in runs.items()}


def _importable(name: str) -> bool:
  import importlib.util
  return importlib.util.find_spec(name) is not None


def _has_pytorch() -> bool:
  import importlib.util
  return all(importlib.util.find_spec(m) for m in ("torch", "transformers"))


def render(reports) -> str:
  """docs/engines.md: one section per CPU, from the raw results."""
  lines = ["# Engines by CPU", "",
           "Generated by `python benchmarks/int8_runtime.py --tables` from "
           "`benchmarks/results/int8_runtime-*.json`; measured by "
           "`python benchmarks/int8_runtime.py --model MODEL --end-to-end N` "
           "(one run per section: figures from different sections are never compared).",
           "",
           "What scoring computes with, chosen from these tables: the int8 copy "
           "training makes is ONNX Runtime's dynamic int8 with 7-bit weights, "
           "the one candidate faster than float32 on every x86 CPU measured "
           "(OpenVINO's NNCF copies are faster where the CPU has VNNI, but "
           "slower than float32 with oneDNN held to AVX2, and 8-bit weights "
           "saturate there); `--precision auto` takes bfloat16 where the CPU "
           "computes it natively (faster than that copy there), else the int8 "
           "copy on any x86 CPU with AVX2, else float32 by the OpenVINO float32 "
           "copy. Engines named `openvino-int8-nncf…`, `onnxruntime-int8-…` and "
           "`openvino-int8-dynamic` are the candidates "
           "`benchmarks/int8_candidates.py` makes for the comparison.",
           ""]
  for report in reports:
    info = report["machine"]
    model = report["model"]
    # benchmarks/machine.py records the peaks in the machine; results
    # written before it, beside it.
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in info.get(
        "matmul_peaks_gflops", report.get("matmul_peaks_gflops", {})).items())
    lines += [f"## {info['cpu']} (family {info['cpu_family']}, model "
              f"{info['cpu_model']}), {report['date']}", "",
              f"Native bfloat16: {'yes' if info['native_bfloat16'] else 'no'}; "
              f"int8 dot products (VNNI, AMX): "
              f"{'yes' if info['int8_dot_product'] else 'no'}; flags: "
              f"{' '.join(info['flags']) or 'none of interest'}; "
              f"TensorFlow matmul peaks (GFLOP/s): {peaks}. Model: "
              f"seq_length {model['seq_length']}, fingerprint "
              f"{model['fingerprint'][:12]}; "
              + ("with its tokenizer copy (workers computing with a copy load "
                 "no TensorFlow)." if (model.get("tokenizer_copy") or {}).get(
                     "offered") else "no tokenizer copy (workers load "
                 "TensorFlow to tokenize).") + (
                  f" **oneDNN held to {report['onednn_max_isa']}** "
                  "(`--onednn-max-isa`: TensorFlow's and OpenVINO's kernels "
                  "as on a CPU without AVX-512; ONNX Runtime's are not held, "
                  "nor are the peaks above)."
                  if report.get("onednn_max_isa") else ""), ""]
    lines += [f"Model call alone: {report['reviews']:,} test reviews "
              f"({report['mean_tokens']:.0f} tokens on average), the same "
              f"token ids in length-sorted batches of {report['batch_size']}, "
              f"best of {report['passes']} passes.", "",
              "| engine | reviews/s | × tensorflow-float32 | accuracy | same "
              "decisions as tensorflow-float32 |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in report["model_call"].items():
      agree = row.get("agreement_with_float32")
      lines.append(f"| {name} | {row['reviews_per_s']:.1f} | "
                   f"{row['ratio_to_tensorflow_float32']:.2f} | "
                   f"{row['accuracy'] * 100:.2f}% | "
                   + (f"{agree * 100:.1f}% |" if agree is not None else "— |"))
    for name, why in report.get("skipped", {}).items():
      lines.append(f"| {name} | not run: {why} | | | |")
    e2e = report.get("end_to_end")
    if e2e:
      n = e2e["reviews"]
      base = TENSORFLOW_ONLY if TENSORFLOW_ONLY in e2e else "float32"
      baseline = ("`--precision float32` on the model without its OpenVINO "
                  "copies (TensorFlow's float32 pipeline)"
                  if base == TENSORFLOW_ONLY else "`--precision float32` "
                  "(TensorFlow: this model had no float32 copy)")
      lines += ["", f"`reviewscore score` as a whole process on {n:,} test "
                "reviews (Parquet in and out), best of the alternated passes; "
                f"the baseline is {baseline}:", "",
                "| options | seconds | reviews/s | × baseline | accuracy "
                "| precision the worker used |",
                "| --- | ---: | ---: | ---: | ---: | --- |"]
      for name in ("auto", "float32", "int8", INT8_SIGNATURE_TOKENIZER,
                   TENSORFLOW_ONLY, ORT_SCRIPT):
        if name not in e2e:
          continue
        run = e2e[name]
        options = {"auto": "every default",
                   TENSORFLOW_ONLY: "--precision float32, no copies",
                   INT8_SIGNATURE_TOKENIZER: "--precision int8, no tokenizer "
                   "copy (TensorFlow tokenizes)",
                   ORT_SCRIPT: "the plain ONNX Runtime script "
                   "(benchmarks/ort_script.py), not ours"}.get(
                       name, f"--precision {name}")
        chosen = "; ".join(run["precision"]) if isinstance(
            run["precision"], list) else run["precision"]
        # The worker's reason for a precision forced on the command line.
        chosen = chosen.replace(": asked for", ": set by `--precision`")
        accuracy = (f"{run['accuracy'] * 100:.2f}%" if "accuracy" in run
                    else "")
        lines.append(f"| {options} | {run['best_s']:.1f} | "
                     f"{n / run['best_s']:.1f} | "
                     f"{e2e[base]['best_s'] / run['best_s']:.2f} | {accuracy} "
                     f"| {chosen} |")
    boot = report.get("startup")
    if boot:
      lines += ["", "A one-review `reviewscore score` as a whole process (medians of "
                f"{next(iter(boot.values()))['passes']}): from launch to the first "
                "scored review, and to exit:", "",
                "| options | first review scored (s) | whole process (s) | peak memory (MiB) |",
                "| --- | ---: | ---: | ---: |"]
      for name, run in boot.items():
        options = "every default" if name == "auto" else f"--precision {name}"
        lines.append(f"| {options} | {run['seconds_to_first_scored']:.2f} | "
                     f"{run['seconds']:.2f} | {run['peak_rss_mib']:,.0f} |")
    lines.append("")
  return "\n".join(lines)


def write_tables(results=RESULTS, doc=REPO / "docs" / "engines.md") -> None:
  reports = [json.loads(path.read_text()) for path in
             sorted(results.glob("int8_runtime-*.json"))]
  doc.write_text(render(reports))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", type=pathlib.Path)
  parser.add_argument("--tables", action="store_true",
                      help="only write docs/engines.md from the results")
  parser.add_argument("--data-dir", type=pathlib.Path,
                      default=throughput.DATA_DIR)
  parser.add_argument("--reviews", type=int, default=2000)
  parser.add_argument("--passes", type=int, default=2)
  parser.add_argument("--end-to-end", type=int, default=0, metavar="N")
  parser.add_argument("--startup", type=int, default=0, metavar="PASSES",
                      help="also time one-review runs, PASSES times each")
  parser.add_argument("--out", type=pathlib.Path, default=None)
  parser.add_argument("--candidates-dir", type=pathlib.Path, default=None,
                      help="where the int8 candidates are made (reused)")
  parser.add_argument("--onednn-max-isa", default=None, metavar="ISA",
                      help="cap oneDNN (TensorFlow's and OpenVINO's kernels, "
                      "not ONNX Runtime's) at an instruction set, e.g. AVX2: "
                      "how they run on CPUs without AVX-512 or VNNI")
  parser.add_argument("--only", default=None,
                      help="comma-separated engines to time (all by default)")
  args = parser.parse_args(argv)
  if args.tables:
    write_tables()
    return
  if args.model is None:
    parser.error("--model is required")

  def log(line):
    print(line, flush=True)

  from engines.model_dir import load_model_card
  card = load_model_card(str(args.model))
  info = machine.describe()  # its peaks: the machine's own, not held
  log(machine.summary(info))
  if args.onednn_max_isa:  # before TensorFlow or OpenVINO loads here
    import os
    os.environ["ONEDNN_MAX_CPU_ISA"] = args.onednn_max_isa
  # Whole processes first: this one's engines, once loaded, keep threads
  # that would take CPU from them.
  end_to_end_report = None
  if args.end_to_end:
    import pyarrow as pa
    import pyarrow.parquet as pq
    ids, texts, labels = throughput.sample_reviews(args.end_to_end,
                                                   data_dir=args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
      parquet = pathlib.Path(tmp) / "reviews.parquet"
      pq.write_table(pa.table({"review_id": ids, "text": texts,
                               "label": labels}), parquet)
      log(f"\nend to end: `reviewscore score` on {len(texts)} reviews")
      own = card.copies.get(contract.INT8)
      runs = end_to_end(
          args.model, parquet, args.passes, log,
          int8=card.int8_copy is not None,
          ort_script=bool(own and own.engine == contract.ONNXRUNTIME)
          and _importable("tokenizers"))
    for name, run in runs.items():
      run["speedup_over_tensorflow_float32"] = (
          runs[TENSORFLOW_ONLY]["best_s"] / run["best_s"])
      log(f"{name}: {len(texts) / run['best_s']:.1f} reviews/s whole process, "
          f"{run['speedup_over_tensorflow_float32']:.2f}x TensorFlow's "
          "float32 pipeline")
    end_to_end_report = {"reviews": len(texts), **runs}
  startup_report = None
  if args.startup:
    import pyarrow as pa
    import pyarrow.parquet as pq
    ids, texts, labels = throughput.sample_reviews(1, data_dir=args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
      parquet = pathlib.Path(tmp) / "one-review.parquet"
      pq.write_table(pa.table({"review_id": ids, "text": texts,
                               "label": labels}), parquet)
      log("\nstart-up: one-review runs")
      startup_report = startup(args.model, parquet, args.startup, log,
                               int8=card.int8_copy is not None)
  ids, texts, labels = throughput.sample_reviews(args.reviews,
                                                 data_dir=args.data_dir)
  from benchmarks.int8_candidates import CALIBRATION_REVIEWS
  from pipeline.scoring_model import acquire_model
  saved = acquire_model(str(args.model / contract.SAVED_MODEL_DIR))
  calibration = calibration_token_ids(saved, args.data_dir, CALIBRATION_REVIEWS)
  candidates_dir = args.candidates_dir or pathlib.Path(
      tempfile.mkdtemp(prefix="reviewscore-int8-candidates-"))
  # Held to an ISA without it, the CPU has no bfloat16 for oneDNN.
  native_bf16 = info["native_bfloat16"] and not args.onednn_max_isa
  saved, found, skipped = engines(args.model, card, native_bf16,
                                  calibration, candidates_dir, log)
  token_ids = []
  for start in range(0, len(texts), 256):
    batch_ids, batch_counts = saved.tokenize(texts[start:start + 256])
    token_ids += [row[:int(n)] for row, n in zip(batch_ids, batch_counts)]
  batches = length_sorted_batches(token_ids)
  mean_tokens = float(np.mean([len(t) for t in token_ids]))
  log(f"{len(texts)} reviews, {mean_tokens:.0f} tokens on average "
      f"(seq_length {card.seq_length}), batches of {BATCH}; "
      f"skipped: {skipped or 'none'}")
  names = list(found)
  if args.only:
    wanted = set(args.only.split(","))
    names = [n for n in names if n in wanted or n == REFERENCE]
  for name in names:  # warm-up: first-call compilation
    found[name](*batches[len(batches) // 2][1:])
  if _has_pytorch() and (not args.only or PEER in args.only.split(",")):
    names.append(PEER)
    weights_dir = pytorch_weights(args.model, pathlib.Path(
        tempfile.mkdtemp(prefix="reviewscore-peer-")))
  else:
    skipped[PEER] = "PyTorch or transformers not installed"
  times = {name: [] for name in names}
  decisions = {}
  for attempt in range(args.passes):
    order = names[attempt % len(names):] + names[:attempt % len(names)]
    for name in order:
      if name == PEER:
        seconds, decided = pytorch_pass(weights_dir, token_ids, card.seq_length,
                                         card.threshold)
      else:
        seconds, decided = model_call_pass(found[name], batches, len(texts))
      times[name].append(seconds)
      decisions[name] = decided
      log(f"  pass {attempt + 1} {name}: {len(texts) / seconds:.1f} reviews/s")
  reference = decisions.get(REFERENCE)
  rows = {}
  for name in names:
    best = min(times[name])
    rows[name] = {
        "reviews_per_s": len(texts) / best,
        "seconds": times[name],
        "accuracy": float(np.mean(decisions[name] == labels)),
        "agreement_with_float32": (float(np.mean(decisions[name] == reference))
                                   if reference is not None else None)}
  base = rows.get(REFERENCE, {}).get("reviews_per_s")
  log(f"\n{'engine':22} {'reviews/s':>10} {'x tf-f32':>9} {'accuracy':>9} "
      f"{'agree':>7}")
  for name, row in rows.items():
    ratio = row["reviews_per_s"] / base if base else float("nan")
    row["ratio_to_tensorflow_float32"] = ratio
    log(f"{name:22} {row['reviews_per_s']:10.1f} {ratio:9.2f} "
        f"{row['accuracy']:9.4f} {row['agreement_with_float32'] or 0:7.4f}")
  report = {
      "benchmark": "int8_runtime", "date": datetime.date.today().isoformat(),
      "machine": info,
      "model": {"dir": str(args.model), "fingerprint": card.model_fingerprint,
                "seq_length": card.seq_length, "int8": card.int8,
                "tokenizer_copy": card.tokenizer_copy},
      "reviews": len(texts), "mean_tokens": mean_tokens, "batch_size": BATCH,
      "passes": args.passes, "model_call": rows, "skipped": skipped,
      "onednn_max_isa": args.onednn_max_isa}
  if end_to_end_report:
    report["end_to_end"] = end_to_end_report
  if startup_report:
    report["startup"] = startup_report
  suffix = f"-onednn-{args.onednn_max_isa.lower()}" if args.onednn_max_isa else ""
  out = args.out or RESULTS / f"int8_runtime-{machine.cpu_slug(info)}{suffix}.json"
  out.write_text(json.dumps(report, indent=2) + "\n")
  log(f"wrote {out}")
  if args.out is None:
    write_tables()


if __name__ == "__main__":
  main()
