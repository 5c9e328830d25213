"""(d) throughput.py's PyTorch peer, each run in a process of its own.

transformers' BertModel (from the MiniLM checkpoint, with our fine-tuned
weights) + mean pooling + linear head, fed our token ids: bf16 autocast on
length-sorted batches with dynamic padding, and float32 with every review
padded to the full length; its own thread pools, so a subprocess
(`throughput.py --peer-worker`), tried with libgomp's default OpenMP wait
policy and with PASSIVE. A part of benchmarks/throughput.py; not run on its
own.
"""
import argparse
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
from benchmarks.processes import THROUGHPUT, WORKER_TIMEOUT  # noqa: E402
from benchmarks.reviews_and_models import (load_hf_weights,  # noqa: E402
                                           read_tokens, write_tokens)
from benchmarks.scoring_paths import BATCH  # noqa: E402


def run_peer(model_dir, tokens, variants, *, batch=BATCH, seq_len,
             threads=2, omp_wait_policy=None, log=print):
  env = dict(os.environ)
  env.pop("OMP_WAIT_POLICY", None)
  if omp_wait_policy:
    env["OMP_WAIT_POLICY"] = omp_wait_policy
  with tempfile.TemporaryDirectory() as tmp:
    inputs = pathlib.Path(tmp) / "tokens.npz"
    write_tokens(inputs, tokens)
    out = pathlib.Path(tmp) / "peer.json"
    cmd = [sys.executable, str(THROUGHPUT), "--peer-worker", str(model_dir),
           str(inputs), str(out), ",".join(variants), str(batch),
           str(seq_len), str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=WORKER_TIMEOUT)
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
  head = torch.nn.Linear(bert.config.hidden_size, 1)
  load_hf_weights(bert, head, model_dir)

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
    logits = np.zeros(len(tokens), np.float32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                enabled=bf16):
      forward(prepared[0][1][:2], prepared[0][2][:2])  # warm-up
      forward(prepared[-1][1][:2], prepared[-1][2][:2])
      start = time.perf_counter()
      for rows, ids, mask in prepared:
        batch_logits = forward(ids, mask)
        labels[rows] = (batch_logits >= 0).int().numpy()
        logits[rows] = batch_logits.float().numpy()
      seconds = time.perf_counter() - start
    padded = sum(ids.numel() for _, ids, _ in prepared)
    results[variant] = {"seconds": seconds, "labels": labels.tolist(),
                        "logits": logits.tolist(),
                        "padding_efficiency": float(lengths.sum() / padded)}
  # Matmul peaks in PyTorch too (same machine, same run).
  results["matmul_gflops"] = machine.torch_matmul_peaks(n=4096, reps=5)
  pathlib.Path(out).write_text(json.dumps(results))


if __name__ == "__main__":  # a part of other scripts, not a benchmark
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.parse_args()
  parser.error("not a benchmark of its own: a part of benchmarks/throughput.py")
