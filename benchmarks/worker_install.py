"""What a scoring worker installs (`pip install .`, as Dataflow's
--setup_file does), in packages and MiB, for this checkout's setup.py and
for another revision's, side by side.

    python benchmarks/worker_install.py [--before REV] [--extra int8]

pip resolves the requirements without installing anything (`--dry-run
--ignore-installed --report`); each resolved distribution's installed size
is summed from its RECORD in this environment (where it is installed: the
test and benchmark extras hold every runtime dependency). Writes
benchmarks/results/worker_install.json with the machine.
"""
import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import tempfile
from importlib import metadata

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import machine  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def resolved(project: pathlib.Path, extra: str = "") -> list:
  """(name, version) of every distribution `pip install PROJECT[extra]`
  would install into an empty environment."""
  target = f"{project}[{extra}]" if extra else str(project)
  done = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
       "--ignore-installed", "--report", "-", target],
      capture_output=True, text=True, check=True, timeout=600)
  report = json.loads(done.stdout)
  return sorted((item["metadata"]["name"].lower(), item["metadata"]["version"])
                for item in report["install"])


def installed_bytes(name: str):
  """Bytes of a distribution's files as installed here (None: absent)."""
  try:
    files = metadata.distribution(name).files or []
  except metadata.PackageNotFoundError:
    return None
  total = 0
  for file in files:
    path = pathlib.Path(file.locate())
    if path.is_file():
      total += path.stat().st_size
  return total


def describe(project: pathlib.Path, extra: str) -> dict:
  packages = resolved(project, extra)
  sizes = {name: installed_bytes(name) for name, _ in packages}
  return {"packages": {name: {"version": version, "bytes": sizes[name]}
                       for name, version in packages},
          "count": len(packages),
          "mib": round(sum(s or 0 for s in sizes.values()) / 2**20, 1),
          "not_installed_here": sorted(n for n, s in sizes.items() if s is None)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--before", default="HEAD",
                      help="the git revision whose setup.py is 'before'")
  parser.add_argument("--extra", default="", help="e.g. int8")
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    before = pathlib.Path(tmp) / "before"
    before.mkdir()
    (before / "setup.py").write_text(subprocess.run(
        ["git", "show", f"{args.before}:setup.py"], cwd=REPO,
        capture_output=True, text=True, check=True).stdout)
    rows = {"before": describe(before, args.extra),
            "now": describe(REPO, args.extra)}
  gone = sorted(set(rows["before"]["packages"]) - set(rows["now"]["packages"]))
  added = sorted(set(rows["now"]["packages"]) - set(rows["before"]["packages"]))
  for name, row in rows.items():
    print(f"{name}: {row['count']} distributions, {row['mib']:,.1f} MiB "
          f"installed (not installed here, uncounted: "
          f"{', '.join(row['not_installed_here']) or 'none'})")
  print(f"no longer installed: {', '.join(gone) or 'none'}")
  print(f"newly installed: {', '.join(added) or 'none'}")
  report = {"benchmark": "worker_install",
            "date": datetime.date.today().isoformat(),
            "machine": machine.describe(peaks=False),
            "command": "pip install ." + (f"[{args.extra}]" if args.extra else ""),
            "before_revision": args.before, **rows,
            "no_longer_installed": gone, "newly_installed": added}
  out = RESULTS / "worker_install.json"
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
