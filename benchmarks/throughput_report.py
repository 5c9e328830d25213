"""What throughput.py prints and writes: its rows, table, checks and plot.

A row of figures per way of scoring (reviews/s, useful GFLOP/s, the share of
the matmul peak, label agreement with the tutorial's way, padding), the table
of them and of the levers at each length, the checks against the PyTorch
peer, the bar chart (throughput.png), and numpy values made JSON. A part of
benchmarks/throughput.py; not run on its own.
"""
import argparse

import numpy as np


def make_row(name, seconds, n, flops, *, precision, peaks, labels=None,
             reference=None, note="", padding=None):
  rate = n / seconds
  peak = peaks.get(precision)
  gflops = flops / seconds / 1e9
  row = {"name": name, "reviews_per_s": rate, "seconds": seconds,
         "useful_gflops": gflops, "precision": precision,
         "peak_fraction": gflops / peak if peak else None,
         "padding_efficiency": padding, "note": note}
  if labels is not None and reference is not None:
    row["agreement"] = float(np.mean(np.asarray(labels) == reference))
  return row


def jsonable(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return str(value)


def format_row(row):
  agreement = row.get("agreement")
  peak = row.get("peak_fraction")
  return (f"{row['name'][:58]:58s} {row['reviews_per_s']:8.1f}/s "
          f"{row['useful_gflops']:6.0f} GF/s "
          f"{'' if peak is None else f'{peak:4.0%}':>5s} "
          f"{'' if agreement is None else f'{agreement:7.2%}':>8s}")


def format_table(seq, run, peaks):
  lines = [f"\n{seq} tokens: {run['mean_tokens']:.0f} mean tokens, "
           f"{run['useful_gflop_per_review']:.2f} useful GFLOP/review; "
           f"peaks f32 {peaks['float32']:.0f}, bf16 {peaks['bfloat16']:.0f} "
           "GFLOP/s",
           f"{'':58s} {'reviews/s':>10s} {'×(a)':>6s} {'×(d)':>6s} "
           f"{'GFLOP/s':>8s} {'%peak':>6s} {'agree(a)':>9s} {'pad eff':>8s}"]
  for row in run["rows"]:
    pad = row["padding_efficiency"]
    pad = "" if pad is None else f"{pad:.0%}"
    lines.append(
        f"{row['name'][:58]:58s} {row['reviews_per_s']:10.1f} "
        f"{row['vs_a']:6.2f} {row['vs_d']:6.2f} {row['useful_gflops']:8.0f} "
        f"{row['peak_fraction']:6.0%} {row.get('agreement', float('nan')):9.2%} "
        f"{pad:>8s}")
  if run["levers"]:
    base = run["levers"][0]["reviews_per_s"]
    lines.append(f"levers on (b), each alone on the first "
                 f"{run['levers'][0].get('n', '')} reviews "
                 "(× = against the first line):")
    for row in run["levers"]:
      agreement = row.get("agreement")
      lines.append(
          f"  {row['name'][:70]:70s} {row['reviews_per_s']:8.1f}/s "
          f"×{row['reviews_per_s'] / base:5.2f} "
          f"{row['peak_fraction']:5.0%} of {row['precision']} peak"
          + ("" if agreement is None else f"  agree {agreement:.2%}"))
  return "\n".join(lines)


def check_targets(report, peaks):
  lines, ok = ["\nchecks against the peer (d), the bf16 peak and (a):"], {}
  for seq, run in report["runs"].items():
    rows = {r["name"][:3]: r for r in run["rows"]}
    b, c, d = rows["(b)"], rows["(c)"], rows["(d)"]
    cold = rows["(c0"]
    checks = {
        "b>=d": b["reviews_per_s"] >= d["reviews_per_s"],
        "c>=0.9d": c["reviews_per_s"] >= 0.9 * d["reviews_per_s"],
        "b_flops>=65%peak": b["peak_fraction"] >= 0.65,
        "b_agreement>=99.5%": b["agreement"] >= 0.995,
        "c_agreement>=99.5%": c["agreement"] >= 0.995,
    }
    ok[seq] = checks
    lines.append(
        f"  {seq:>4s} tokens: (b)/(d) {b['reviews_per_s'] / d['reviews_per_s']:.2f}, "
        f"(c)/(d) {c['reviews_per_s'] / d['reviews_per_s']:.2f} "
        f"(fresh process, start-up included: "
        f"{cold['reviews_per_s'] / d['reviews_per_s']:.2f}), "
        f"(b) {b['peak_fraction']:.0%} of bf16 peak, agreement (b) "
        f"{b['agreement']:.2%} (c) {c['agreement']:.2%} → "
        + ", ".join(f"{k} {'MET' if v else 'not met'}" for k, v in checks.items()))
  return {"checks": ok, "lines": lines}


def plot(report, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  runs = report["runs"]
  fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5),
                           squeeze=False)
  for ax, (seq, run) in zip(axes[0], runs.items()):
    short = {"(a)": "(a) tutorial", "(b)": "(b) handler", "(c)": "(c) pipeline",
             "(c0)": "(c0) fresh process",
             "(d)": "(d) torch bf16", "(d0)": "(d0) torch f32"}
    names = [short.get(r["name"].split()[0], r["name"].split()[0])
             for r in run["rows"]]
    rates = [r["reviews_per_s"] for r in run["rows"]]
    bars = ax.bar(names, rates,
                  color=["#999", "#2a7", "#5b9", "#c63", "#e96", "#9cb"])
    for bar, rate in zip(bars, rates):
      ax.annotate(f"{rate:.1f}", (bar.get_x() + bar.get_width() / 2, rate),
                  ha="center", va="bottom", fontsize=8)
    ax.set_title(f"{seq} tokens, {report['num_reviews']} IMDB test reviews")
    ax.set_ylabel("reviews/s")
    ax.tick_params(axis="x", labelsize=8)
  fig.suptitle(f"scoring throughput, {report['date']}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


if __name__ == "__main__":  # a part of other scripts, not a benchmark
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.parse_args()
  parser.error("not a benchmark of its own: a part of benchmarks/throughput.py")
