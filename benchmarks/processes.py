"""Processes around a benchmark: this one, its children and the others.

Keeping PyTorch out of a process that scores as a worker does, the scripts
whose hidden worker options run a measurement in a child process of its own
(and how long one may take), the resident memory of a child's process tree,
and the other processes busy on the CPU while a benchmark runs (the numbers
are only as quiet as the machine was). A part of benchmarks/throughput.py
and benchmarks/peers.py; not run on its own.
"""
import argparse
import os
import pathlib
import subprocess
import time

# The scripts a child process runs with a hidden worker option
# (`throughput.py --peer-worker|--threads-worker|--scale-worker`,
# `peers.py --worker`).
THROUGHPUT = pathlib.Path(__file__).with_name("throughput.py")
PEERS = pathlib.Path(__file__).with_name("peers.py")
WORKER_TIMEOUT = 1800


def without_pytorch():
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


def tree_rss(pid):
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


def busy_others():
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


if __name__ == "__main__":  # a part of other scripts, not a benchmark
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.parse_args()
  parser.error("not a benchmark of its own: a part of throughput.py and peers.py")
