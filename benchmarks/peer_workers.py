"""Each contender of peers.py in a process of its own, alive for the whole run.

The loop a contender's process runs (`peers.py --worker KIND MODEL GRAPHS`):
it reads one JSON command a line from stdin (token ids to load, warm up,
score with a batch size and thread count, matmul peaks) and answers each
with one line, and the orchestrator's handle on such a process. So a
compiled graph or an inference session is built once, as a server or a
Beam worker would build it. A part of benchmarks/peers.py; not run on its
own.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine  # noqa: E402
from benchmarks.peer_contenders import (OursContender,  # noqa: E402
                                        make_peer, sorted_batches)
from benchmarks.processes import PEERS, without_pytorch  # noqa: E402
from benchmarks.reviews_and_models import read_tokens  # noqa: E402

REPLY = "@@reply "


def worker(kind, model_dir, graphs_dir):
  """Answers commands read from stdin, one JSON line each, until EOF."""
  if kind == "ours":
    without_pytorch()
    contender = OursContender(model_dir)
  else:
    contender = make_peer(kind, model_dir, graphs_dir)
  tokens_cache = {}
  for line in sys.stdin:
    command = json.loads(line)
    op = command["op"]
    if op == "tokens":
      tokens_cache[command["name"]] = read_tokens(command["path"])
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
        [sys.executable, str(PEERS), "--worker", kind, str(model_dir),
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


if __name__ == "__main__":  # a part of other scripts, not a benchmark
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.parse_args()
  parser.error("not a benchmark of its own: a part of benchmarks/peers.py")
