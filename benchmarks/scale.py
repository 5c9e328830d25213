"""Peak memory and rate of `reviewscore score` with every default, by input size.

    python benchmarks/scale.py --model-512 models/m512 --model-128 models/m128 \
        [--series long,short,startup,rerun,padding] [--long-sizes 25000,100000]
        [--short-sizes 100000,1000000] [--bucketed-at smallest|all|none]

Every point is a fresh `reviewscore score --input X --model M --output O`
process with no other flag, timed from start to exit, its peak resident
memory taken from the kernel (getrusage of that process) and sampled over
its tree. The series:

- long: IMDB reviews (test, then train, then unsup: 100,000 in all) with
  the 512-token model;
- short: the sentences of those reviews, each a review of its own with an
  id of its own (1.2 million), with the 128-token model;
- startup: a one-review run, three times: the time from launch to the
  line announcing the first scored review, and the whole process;
- rerun: the test reviews as 100 Parquet files scored in full with the
  128-token model, then one file added (1% new) and `--since` the full
  run, against the full run;
- padding: the test reviews tokenized by the 512-token model (in this
  process, no scoring), then the share of real tokens among padded ones in
  batches of 32 cut in arrival order after `SortByLengthInWaves` with waves
  of 1,024 to 8,192, against Beam's buckets every 16 tokens and arrival
  order, at 512 and 128 tokens.

At each series' smallest size (`--bucketed-at`), the same input runs right
after with `--length-bucketing` (Beam's stateful bucketed BatchElements,
the default before sorted waves), for the rate and memory comparison.
Writes benchmarks/results/scale.json (every run with its date, the
commands, the latest run's machine as benchmarks/machine.py describes it:
CPU, flags, matmul peaks, versions; a run replaces only the
points it measures again) and
scale.png; `python benchmarks/tables.py` turns them into docs/scale.md.
"""
import argparse
import datetime
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine  # noqa: E402
from benchmarks.processes import tree_rss  # noqa: E402
from benchmarks.throughput import DATA_DIR, read_card  # noqa: E402
from schemas import model_dir as contract  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
SPLITS = ("test", "train", "unsup")
ROW_GROUP = 1024
RERUN_FILES = 100
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|<br\s*/?>\s*(?:<br\s*/?>\s*)*")


def score_command(input_path, model, output, *extra):
  return [sys.executable, "-m", "reviewscore.cli", "score", "--input",
          str(input_path), "--model", str(model), "--output", str(output),
          *extra]


FIRST_SCORED = "progress: first review scored"


def measure(command, log=print, first_scored=False):
  """Runs one process; its wall time, kernel peak RSS and sampled tree RSS;
  with `first_scored`, also the time until it announces its first scored
  review."""
  start = time.perf_counter()
  marked = None
  with tempfile.TemporaryDirectory() as tmp:
    # A file, not a pipe: a long run's progress lines must never block it.
    # The child appends through its own descriptor; the probe reads through
    # another, so neither moves the other's position.
    path = pathlib.Path(tmp) / "stderr"
    with open(path, "ab") as child_stderr, open(os.devnull, "w") as devnull:
      proc = subprocess.Popen(command, stdout=devnull, stderr=child_stderr)
    seen = b""
    with open(path, "rb") as probe:
      sampled = 0
      while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
          break
        sampled = max(sampled, tree_rss(proc.pid))
        if first_scored and marked is None:
          seen = seen[-200:] + probe.read()
          if FIRST_SCORED.encode() in seen:
            marked = time.perf_counter() - start
        time.sleep(0.05)
      seconds = time.perf_counter() - start
    said = path.read_bytes().decode("utf-8", "replace")
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode != 0:
    log(said[-3000:])
    raise RuntimeError(f"{' '.join(map(str, command[:6]))} ... failed "
                       f"({proc.returncode})")
  timed = {"seconds": round(seconds, 2),
           "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
           "sampled_tree_rss_mib": round(sampled / 2 ** 20, 1)}
  if first_scored:
    if marked is None:
      if FIRST_SCORED not in said:
        raise RuntimeError(f"{FIRST_SCORED!r} never appeared: {said[-1000:]}")
      # Announced within the last poll before exit: bounded by the exit.
      timed["first_scored_seen_at_exit"] = True
      marked = seconds
    timed["seconds_to_first_scored"] = round(marked, 2)
  return timed


def imdb_reviews(data_dir):
  import pyarrow as pa
  import pyarrow.parquet as pq
  tables = [pq.read_table(data_dir / f"{s}.parquet", columns=["review_id", "text"])
            for s in SPLITS]
  schema = tables[0].schema
  return pa.concat_tables([t.cast(schema) for t in tables])


def sentences(reviews):
  """Each sentence of each review, an id of its own (REVIEW:N)."""
  import pyarrow as pa
  ids, texts = [], []
  for review_id, text in zip(reviews["review_id"].to_pylist(),
                             reviews["text"].to_pylist()):
    number = 0
    for sentence in SENTENCE_END.split(text):
      sentence = sentence.strip()
      if len(sentence.split()) >= 2:
        ids.append(f"{review_id}:{number}")
        texts.append(sentence)
        number += 1
  return pa.table({"review_id": ids, "text": texts})


def input_file(table, size, path):
  import pyarrow.parquet as pq
  if size > table.num_rows:
    raise SystemExit(f"only {table.num_rows:,} rows for a run of {size:,}")
  if not path.exists():
    pq.write_table(table.slice(0, size), path, row_group_size=ROW_GROUP)
  return path


def series_runs(name, table, sizes, bucketed_at, model, work, log):
  runs = []
  compared = {"smallest": sizes[:1], "all": sizes, "none": []}[bucketed_at]
  for size in sizes:
    path = input_file(table, size, work / f"{name}-{size}.parquet")
    modes = [("waves", ())]
    if size in compared:
      modes.append(("buckets", ("--length-bucketing",)))
    for mode, extra in modes:
      out = work / "out" / f"{name}-{size}-{mode}"
      shutil.rmtree(out.parent, ignore_errors=True)
      entry = measure(score_command(path, model, out / "scores", *extra), log)
      manifest = json.loads((out / "scores-manifest.json").read_text())
      entry.update(series=name, reviews=size, batching=mode, date=_now(),
                   scored=manifest["counts"]["scored"],
                   dead_lettered=manifest["counts"]["dead_lettered"],
                   reviews_per_s=round(size / entry["seconds"], 2))
      runs.append(entry)
      log(f"{name} {size:>9,} {mode:<7} {entry['seconds']:8.1f} s "
          f"{entry['reviews_per_s']:8.1f} reviews/s  peak RSS "
          f"{entry['peak_rss_mib']:7.0f} MiB")
  return runs


def startup_runs(table, model, work, log, passes=3):
  path = input_file(table, 1, work / "one-review.parquet")
  runs = []
  for n in range(passes):
    out = work / "out" / f"startup-{n}"
    shutil.rmtree(out, ignore_errors=True)
    entry = measure(score_command(path, model, out / "scores"), log,
                    first_scored=True)
    entry.update(series="startup", reviews=1, batching="waves", date=_now())
    runs.append(entry)
    log(f"one review: first scored after "
        f"{entry['seconds_to_first_scored']:.2f} s, whole process "
        f"{entry['seconds']:.2f} s")
  return runs


def rerun_runs(table, model, work, log):
  """A full run over RERUN_FILES files, then a rerun with one file more."""
  import pyarrow.parquet as pq
  folder = work / "rerun-input"
  shutil.rmtree(folder, ignore_errors=True)
  folder.mkdir(parents=True)
  per_file = table.num_rows // (RERUN_FILES + 1)
  for n in range(RERUN_FILES):
    pq.write_table(table.slice(n * per_file, per_file),
                   folder / f"part-{n:03d}.parquet")
  out = work / "out" / "rerun"
  shutil.rmtree(out, ignore_errors=True)
  full = measure(score_command(f"{folder}/*.parquet", model, out / "full"), log)
  full.update(series="rerun", reviews=RERUN_FILES * per_file, batching="full",
              files=RERUN_FILES,
              date=_now())
  log(f"full run, {full['reviews']:,} reviews: {full['seconds']:.1f} s")
  pq.write_table(table.slice(RERUN_FILES * per_file, per_file),
                 folder / f"part-{RERUN_FILES:03d}.parquet")
  rerun = measure(score_command(f"{folder}/*.parquet", model, out / "rerun",
                                "--since", str(out / "full")), log)
  manifest = json.loads((out / "rerun-manifest.json").read_text())
  rerun.update(series="rerun", reviews=manifest["counts"]["read"],
               batching="since", date=_now())
  log(f"rerun with {rerun['reviews']:,} new reviews: {rerun['seconds']:.1f} s")
  return [full, rerun]


def padding_runs(test, model, log, waves=(1024, 2048, 4096, 8192)):
  """Real over padded tokens of each way to form batches (no scoring)."""
  import numpy as np
  from pipeline.settings import DEFAULTS
  batch = DEFAULTS["max_batch_size"]
  from benchmarks.throughput import make_batches
  from pipeline.scoring_model import acquire_model
  from pipeline.settings import default_bucket_boundaries
  tokenizer = acquire_model(str(pathlib.Path(model) / contract.SAVED_MODEL_DIR))
  texts = test["text"].to_pylist()
  full = np.concatenate([tokenizer.tokenize(texts[i:i + 64])[1]
                         for i in range(0, len(texts), 64)]).astype(int)
  runs = []
  for seq_length in (_seq_length(model), 128):
    lengths = np.minimum(full, seq_length)

    def efficiency(batches):
      padded = sum(len(b) * lengths[b].max() for b in batches)
      return round(float(lengths.sum() / padded), 4)
    ways = {"arrival": make_batches(lengths, batch=batch, mode="none"),
            "buckets": make_batches(lengths, batch=batch, mode="beam",
                                    boundaries=default_bucket_boundaries(
                                        seq_length))}
    for wave in waves:
      ways[f"waves {wave}"] = make_batches(lengths, batch=batch, mode="waves",
                                           wave=wave)
    for way, batches in ways.items():
      entry = {"series": "padding", "seq_length": seq_length, "batching": way,
               "batch": batch,
               "reviews": len(lengths), "real_per_padded_tokens":
                   efficiency(batches), "date": _now()}
      runs.append(entry)
      log(f"padding at {seq_length} tokens, {way:<11} real/padded tokens "
          f"{entry['real_per_padded_tokens']:.3f}")
  return runs


def checks(runs):
  """Memory growth and the waves-to-buckets ratios, computed from the runs."""
  out = {}
  for name in ("long", "short"):
    waves = [r for r in runs if r["series"] == name and r["batching"] == "waves"]
    if len(waves) >= 2:
      low = min(r["peak_rss_mib"] for r in waves)
      out[f"{name}_memory_growth"] = round(
          max(r["peak_rss_mib"] for r in waves) / low - 1, 4)
    for r in runs:
      if r["series"] == name and r["batching"] == "buckets":
        same = [w for w in waves if w["reviews"] == r["reviews"]][0]
        out[f"{name}_{r['reviews']}_waves_per_buckets_rate"] = round(
            same["reviews_per_s"] / r["reviews_per_s"], 3)
        out[f"{name}_{r['reviews']}_waves_per_buckets_memory"] = round(
            same["peak_rss_mib"] / r["peak_rss_mib"], 3)
  return out


def plot(report, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = [n for n in ("long", "short")
           if any(r["series"] == n for r in report["runs"])]
  if not names:
    return
  fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4),
                           squeeze=False)
  for ax, name in zip(axes[0], names):
    rate_ax = ax.twinx()
    for mode, style in (("waves", "o-"), ("buckets", "s--")):
      rows = sorted((r for r in report["runs"]
                     if r["series"] == name and r["batching"] == mode),
                    key=lambda r: r["reviews"])
      if not rows:
        continue
      xs = [r["reviews"] for r in rows]
      ax.plot(xs, [r["peak_rss_mib"] for r in rows], style, color="#c63",
              label=f"peak RSS, {mode}")
      rate_ax.plot(xs, [r["reviews_per_s"] for r in rows], style,
                   color="#2a7", label=f"reviews/s, {mode}")
    ax.set_xscale("log")
    ax.set_xlabel("reviews")
    ax.set_ylabel("peak RSS (MiB)", color="#c63")
    rate_ax.set_ylabel("reviews/s", color="#2a7")
    ax.set_ylim(bottom=0)
    rate_ax.set_ylim(bottom=0)
    length = report["seq_lengths"][name]
    ax.set_title(f"{name} reviews, {length} tokens", fontsize=9)
    lines = ax.get_legend_handles_labels()
    more = rate_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7,
              loc="lower right")
  fig.suptitle(f"reviewscore score, defaults, DirectRunner, {report['date']}",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _remeasured(earlier, runs):
  """A size of a series in the same batching, or a whole other series."""
  if earlier["series"] in ("long", "short"):
    return any((r["series"], r["reviews"], r["batching"]) ==
               (earlier["series"], earlier["reviews"], earlier["batching"])
               for r in runs)
  return any(r["series"] == earlier["series"] for r in runs)


def _same_cpu(recorded, described):
  """Whether an earlier report's machine is this CPU class (the same model
  name, family and model): runs from different CPUs are never merged."""
  keys = ("cpu", "cpu_family", "cpu_model")
  return all(recorded.get(k) is not None and recorded.get(k) == described[k]
             for k in keys)


def _now():
  return datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds")


def _seq_length(model_dir):
  return read_card(model_dir).seq_length


def _ints(text):
  return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model-512", type=pathlib.Path, required=True)
  parser.add_argument("--model-128", type=pathlib.Path, required=True)
  parser.add_argument("--series", default="long,short,startup,rerun,padding")
  parser.add_argument("--long-sizes", default="25000,100000")
  parser.add_argument("--short-sizes", default="100000,1000000")
  parser.add_argument("--bucketed-at", default="smallest",
                      choices=("smallest", "all", "none"),
                      help="sizes also run with --length-bucketing")
  parser.add_argument("--rerun-reviews", type=int, default=25_000,
                      help="rerun: the first N test reviews, in 100 files")
  parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
  parser.add_argument("--work-dir", type=pathlib.Path,
                      default=REPO / "runs" / "scale")
  parser.add_argument("--results-dir", type=pathlib.Path, default=RESULTS)
  args = parser.parse_args(argv)
  wanted = set(args.series.split(","))
  described = machine.describe()  # before the runs, on a quiet machine
  print(machine.summary(described), flush=True)
  args.work_dir.mkdir(parents=True, exist_ok=True)
  reviews = imdb_reviews(args.data_dir)
  bucketed_at = args.bucketed_at
  runs = []
  if "startup" in wanted:
    runs += startup_runs(reviews, args.model_128, args.work_dir, print)
  if "long" in wanted:
    runs += series_runs("long", reviews, _ints(args.long_sizes), bucketed_at,
                        args.model_512, args.work_dir, print)
  if "short" in wanted:
    short = sentences(reviews)
    print(f"{short.num_rows:,} sentences from {reviews.num_rows:,} reviews")
    runs += series_runs("short", short, _ints(args.short_sizes), bucketed_at,
                        args.model_128, args.work_dir, print)
  import pyarrow.parquet as pq
  test = pq.read_table(args.data_dir / "test.parquet",
                       columns=["review_id", "text"])
  if "rerun" in wanted:
    runs += rerun_runs(test.slice(0, args.rerun_reviews), args.model_128,
                       args.work_dir, print)
  if "padding" in wanted:
    runs += padding_runs(test, args.model_512, print)
  results = args.results_dir / "scale.json"
  command = "python benchmarks/scale.py " + " ".join(argv)
  commands = [command]
  earlier = json.loads(results.read_text()) if results.exists() else None
  if earlier and not _same_cpu(earlier["machine"], described):
    print(f"{results}: its runs were measured on another CPU, or on one it "
          "does not record: replaced, not merged (git keeps them)")
    earlier = None
  if earlier:  # earlier runs stay unless this run remeasured them
    runs = [r for r in earlier["runs"] if not _remeasured(r, runs)] + runs
    commands = [c for c in earlier.get("commands", [earlier.get("command")])
                if c and c != command] + commands
  report = {
      "date": _now(),
      "commands": commands,
      "machine": described,
      "seq_lengths": {"long": _seq_length(args.model_512),
                      "short": _seq_length(args.model_128)},
      "models": {"long": str(args.model_512), "short": str(args.model_128)},
      "runs": runs, "checks": checks(runs)}
  args.results_dir.mkdir(parents=True, exist_ok=True)
  results.write_text(json.dumps(report, indent=1))
  plot(report, args.results_dir / "scale.png")
  for name, value in report["checks"].items():
    print(f"{name}: {value}")
  print(f"wrote {args.results_dir / 'scale.json'} and scale.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
