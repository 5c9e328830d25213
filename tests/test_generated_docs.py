"""The published tables are what their committed raw results say.

Catches a table edited by hand, or a raw result rerun without its table
regenerated (or the other way round): each generator runs here on the
committed JSON into a scratch folder, and its output must be the committed
page, byte for byte.
"""
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def test_peers_and_scale_tables_match_their_json(tmp_path):
  from benchmarks import tables
  tables.write_tables(RESULTS, tmp_path)
  written = sorted(p.name for p in tmp_path.iterdir())
  assert written == ["peers.md", "scale.md"], written
  for name in written:
    assert (tmp_path / name).read_text() == (REPO / "docs" / name).read_text(), (
        f"docs/{name} differs from what `python benchmarks/tables.py` makes "
        "of benchmarks/results/: rerun it")


def test_engines_tables_match_their_json(tmp_path):
  from benchmarks import int8_runtime
  doc = tmp_path / "engines.md"
  int8_runtime.write_tables(RESULTS, doc)
  assert doc.read_text() == (REPO / "docs" / "engines.md").read_text(), (
      "docs/engines.md differs from what `python benchmarks/int8_runtime.py "
      "--tables` makes of benchmarks/results/: rerun it")


# Raw results written before benchmarks/machine.py recorded the CPU's model
# and flags (2026-11-25 to 11-26); docs/performance.md says so where it
# quotes them. None may join them.
WITHOUT_THEIR_MACHINE = {
    "end_to_end.json", "end_to_end-128.json", "end_to_end-512.json",
    "peers-128.json", "peers-512.json",
    "robustness.json", "scale.json", "shape_cache.json"}


def test_every_new_raw_result_records_its_machine():
  """The CPU model and its flags: a figure without its machine cannot be
  compared."""
  import json
  missing = set()
  for path in sorted(RESULTS.glob("*.json")):
    report = json.loads(path.read_text())
    machine = report.get("machine") if isinstance(report, dict) else None
    if not (isinstance(machine, dict) and machine.get("cpu")
            and "flags" in machine):
      missing.add(path.name)
  assert missing <= WITHOUT_THEIR_MACHINE, (
      f"raw results without their machine: {sorted(missing - WITHOUT_THEIR_MACHINE)}")


def test_frontier_table_matches_its_json(tmp_path):
  from benchmarks import quick_frontier
  doc = tmp_path / "frontier.md"
  quick_frontier.write_tables(RESULTS, doc)
  assert doc.read_text() == (REPO / "docs" / "frontier.md").read_text(), (
      "docs/frontier.md differs from what `python benchmarks/quick_frontier.py "
      "--tables` makes of benchmarks/results/: rerun it")
