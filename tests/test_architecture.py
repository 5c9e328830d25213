"""The import graph and the contract's single home, read from the source.

    schemas  <-  runtime  <-  evaluation, engines  <-  train, pipeline  <-  reviewscore

Catches: the training side importing the scoring side or back (workers
would carry training code), `schemas` depending on anything of ours, an
import loop between any two files, and a name of the model directory's or
the run manifest's contract spelled outside its module in `schemas/`.
"""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
OURS = {"schemas", "runtime", "evaluation", "engines", "train", "pipeline",
        "reviewscore"}
ALLOWED = {
    "schemas": set(),
    "runtime": {"schemas"},
    "evaluation": {"schemas"},
    "engines": {"schemas", "runtime"},
    "train": {"schemas", "runtime", "evaluation", "engines"},
    "pipeline": {"schemas", "runtime", "evaluation", "engines"},
    "reviewscore": OURS,
}
CONTRACT_NAMES = {"model_card.json", "saved_model", "serving_default",
                  "classify_tokens", "tokenize", "saved_model.pb",
                  "variables/variables.index"}


def _modules(package: str):
  return sorted((REPO / package).rglob("*.py"))


def _imported_packages(path: pathlib.Path) -> set:
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      found.add(node.module.split(".")[0])
  return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_lies_below_it(package):
  assert _modules(package), package
  for path in _modules(package):
    wrong = _imported_packages(path) - ALLOWED[package] - {package}
    assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"


def test_the_model_directory_contract_is_spelled_in_one_place():
  home = REPO / "schemas" / "model_dir.py"
  spelled = {node.value for node in ast.walk(ast.parse(home.read_text()))
             if isinstance(node, ast.Constant)}
  assert CONTRACT_NAMES <= spelled
  for package in ("train", "pipeline", "evaluation", "engines", "reviewscore"):
    for path in _modules(package):
      tree = ast.parse(path.read_text())
      literals = {node.value for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)}
      assert not literals & CONTRACT_NAMES, (
          f"{path.relative_to(REPO)} spells {sorted(literals & CONTRACT_NAMES)}")


OUTPUT_LAYOUT_NAMES = {"-manifest.json", "-?????-of-?????.parquet", "-errors",
                       "-SSSSS-of-NNNNN"}


def test_the_scored_output_layout_is_spelled_in_one_place():
  """`report` and self-training read what scoring writes: the names must
  not drift apart."""
  home = REPO / "schemas" / "outputs.py"
  spelled = {node.value for node in ast.walk(ast.parse(home.read_text()))
             if isinstance(node, ast.Constant)}
  assert OUTPUT_LAYOUT_NAMES <= spelled
  for package in ("train", "pipeline", "evaluation", "reviewscore"):
    for path in _modules(package):
      literals = {node.value for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)}
      assert not literals & OUTPUT_LAYOUT_NAMES, (
          f"{path.relative_to(REPO)} spells {sorted(literals & OUTPUT_LAYOUT_NAMES)}")


# Keys of PREFIX-manifest.json that no other file has reason to spell (the
# short ones, such as "input" or "counts", are everyday words).
MANIFEST_KEYS = {"run_id", "input_files", "all_scores", "all_errors",
                 "extends", "dead_lettered_by_reason", "earlier_rows_replaced",
                 "completed_at", "tokenization", "new_files", "changed_files",
                 "unchanged_files", "vanished_files"}


def test_the_run_manifest_is_spelled_in_one_place():
  """Scoring writes the manifest; reruns, `report` and self-training read
  it: a key spelled in two places drifts (a rerun missing what a run
  recorded)."""
  assert MANIFEST_KEYS <= _manifest_field_names()
  for package in ("train", "pipeline", "evaluation", "engines", "reviewscore"):
    for path in _modules(package):
      literals = {node.value for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)}
      assert not literals & MANIFEST_KEYS, (
          f"{path.relative_to(REPO)} spells {sorted(literals & MANIFEST_KEYS)}")


def _manifest_field_names() -> set:
  import dataclasses

  from schemas import manifest
  names = set()
  for record in (manifest.RunManifest, manifest.ModelUsed, manifest.Counts,
                 manifest.IncrementRecord, manifest.Reading):
    names.update(f.name for f in dataclasses.fields(record))
  return names


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_of(path: pathlib.Path, known: set) -> set:
  """The modules of ours `path` imports, anywhere in it (a lazy import
  inside a function still makes a loop)."""
  found = set()
  package = _module_name(path) if path.name == "__init__.py" else \
      _module_name(path).rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) -
                                             node.level + 1] + [base]).strip(".")
      names = [base] + [f"{base}.{alias.name}" for alias in node.names]
    else:
      continue
    for name in names:
      # `from train import data`: the module data, or else the package.
      while name and name not in known:
        name = name.rpartition(".")[0]
      if name:
        found.add(name)
  return found


def test_no_file_imports_itself_through_others():
  """Every file stands above what it imports: a loop means two files that
  are one concept, or one that should be split (caught so far: commit ↔
  incremental, classifier → encoders → import_encoder → export →
  classifier held apart by a lazy import)."""
  paths = [p for package in OURS for p in _modules(package)]
  known = {_module_name(p) for p in paths}
  graph = {_module_name(p): _imports_of(p, known) - {_module_name(p)}
           for p in paths}
  # A package's __init__ re-exporting its modules is not a loop of theirs.
  for name in list(graph):
    graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
  state = {}

  def visit(name, trail):
    state[name] = "open"
    for child in sorted(graph.get(name, ())):
      if state.get(child) == "open":
        loop = trail[trail.index(child):] + [child]
        raise AssertionError("import loop: " + " -> ".join(loop))
      if child not in state:
        visit(child, trail + [child])
    state[name] = "done"
  for name in sorted(graph):
    if name not in state:
      visit(name, [name])
