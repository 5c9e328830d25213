"""The worker image (Dockerfile) is built from the package, not from a list.

Catches: a package that setup.py ships but the image's build context leaves
out (`.dockerignore`), and an image whose smoke import fails: the package is
installed from that context into a fresh virtual environment the way the
Dockerfile installs it (`pip install --no-deps .`, dependencies already
there), and the Dockerfile's own smoke command runs in it, outside the
repository. No Docker daemon is needed (the machines of this project have
none; docs/scaling.md says what was run).
"""
import fnmatch
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _ignore_patterns():
  lines = (REPO / ".dockerignore").read_text().splitlines()
  return [line.strip().rstrip("/") for line in lines
          if line.strip() and not line.startswith("#")]


def _ignored(relative: str, patterns) -> bool:
  """Docker's rule, for the patterns we use: a path is left out when it, or
  a folder above it, matches a pattern (`**/` at any depth)."""
  parts = relative.split("/")
  prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
  for pattern in patterns:
    if pattern.startswith("**/"):
      if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
        return True
    elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
      return True
  return False


def build_context(target: pathlib.Path) -> pathlib.Path:
  """The files `docker build .` sends, copied into `target`."""
  patterns = _ignore_patterns()
  for root, dirs, files in os.walk(REPO):
    here = pathlib.Path(root).relative_to(REPO).as_posix()
    here = "" if here == "." else here + "/"
    dirs[:] = [d for d in dirs if not _ignored(here + d, patterns)]
    for name in files:
      if not _ignored(here + name, patterns):
        destination = target / (here + name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(root, name), destination)
  return target


def shipped_packages():
  """The packages setup.py ships, as setuptools finds them."""
  import setuptools
  found = {}

  def capture(**kwargs):
    found.update(kwargs)
  original = setuptools.setup
  setuptools.setup = capture
  cwd = os.getcwd()
  try:
    os.chdir(REPO)
    exec(compile((REPO / "setup.py").read_text(), "setup.py", "exec"), {})
  finally:
    setuptools.setup = original
    os.chdir(cwd)
  return found["packages"]


def test_every_shipped_package_is_in_the_build_context(tmp_path):
  context = build_context(tmp_path / "context")
  packages = shipped_packages()
  assert {"schemas", "engines", "pipeline", "runtime", "evaluation",
          "train", "reviewscore"} <= set(packages)
  missing = [p for p in packages
             if not (context / p.replace(".", "/") / "__init__.py").is_file()]
  assert not missing, f"left out of the image by .dockerignore: {missing}"
  # What no worker needs stays out of the image.
  for heavy in ("tests", "benchmarks", "models", ".venv", ".git"):
    assert not (context / heavy).exists(), heavy


def _smoke_command() -> str:
  """The Python of the Dockerfile's smoke import, as written there."""
  text = (REPO / "Dockerfile").read_text().replace("\\\n", "")
  found = [command for command in re.findall(r'python -c "([^"]+)"', text)
           if "pipeline.run" in command]
  assert len(found) == 1, "no one smoke import of pipeline.run in the Dockerfile"
  return found[0]


def test_the_image_smoke_import_passes_in_a_venv_built_like_the_image(
    tmp_path):
  """`pip install --no-deps .` from the build context into a fresh venv
  whose dependencies are this environment's (none downloaded), then the
  Dockerfile's smoke import from `/`: the repository is not on the path,
  so only what was installed from the context can be imported."""
  context = build_context(tmp_path / "context")
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                 check=True, timeout=120)
  python = venv / "bin" / "python"
  site = subprocess.run(
      [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
       "['purelib'])"], capture_output=True, text=True, check=True
  ).stdout.strip()
  # This environment's packages as a plain path entry: its .pth files
  # (the editable install of the repository among them) are not read.
  ours = sysconfig.get_paths()["purelib"]
  pathlib.Path(site, "dependencies.pth").write_text(ours + "\n")
  installed = subprocess.run(
      [str(python), "-m", "pip", "install", "-q", "--no-deps",
       "--no-build-isolation", "--no-index", "--target", site, str(context)],
      capture_output=True, text=True, timeout=300)
  assert installed.returncode == 0, installed.stderr[-3000:]
  smoke = _smoke_command()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  done = subprocess.run(
      [str(python), "-c", smoke + "\nimport pipeline\nprint(pipeline.__file__)"],
      cwd="/", env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip().splitlines()[-1].startswith(site), done.stdout
  # And without a package the context leaves out, it fails: the check bites.
  shutil.rmtree(pathlib.Path(site) / "engines")
  broken = subprocess.run([str(python), "-c", smoke], cwd="/", env=env,
                          capture_output=True, text=True, timeout=300)
  assert broken.returncode != 0
  assert "engines" in broken.stderr


@pytest.mark.parametrize("relative, expected", [
    ("engines/onnx_classifier.py", False), ("tests/conftest.py", True),
    ("pipeline/__pycache__/run.cpython-311.pyc", True),
    ("data/imdb/test.parquet", True), ("setup.py", False)])
def test_the_ignore_rules_read_as_docker_reads_them(relative, expected):
  assert _ignored(relative, _ignore_patterns()) is expected
