"""The import graph and the contract's single home, read from the source.

    schemas, runtime  <-  evaluation, engines  <-  train, pipeline  <-  reviewscore

Catches: the training side importing the scoring side or back (workers
would carry training code), `schemas` depending on anything of ours, and a
name of the model directory's contract spelled outside `schemas/model_dir.py`.
"""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
OURS = {"schemas", "runtime", "evaluation", "engines", "train", "pipeline",
        "reviewscore"}
ALLOWED = {
    "schemas": set(),
    "runtime": set(),
    "evaluation": {"schemas"},
    "engines": {"schemas", "runtime"},
    "train": {"schemas", "runtime", "evaluation", "engines"},
    "pipeline": {"schemas", "runtime", "evaluation", "engines"},
    "reviewscore": OURS,
}
CONTRACT_NAMES = {"model_card.json", "saved_model", "serving_default",
                  "classify_tokens", "tokenize"}


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
