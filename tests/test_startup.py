"""What a scoring process loads before its first batch."""
import json
import subprocess
import sys

import pyarrow.parquet as pq

from schemas import model_dir as contract

# `reviewscore score` run in a child, then the modules it ended up with.
_SCORE_AND_LIST_MODULES = """
import json, sys
from reviewscore.cli import main
try:
  main(sys.argv[1:])
except SystemExit as exit:
  code = exit.code
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}))
"""

# What a Beam worker does first: load the model through the handler's
# module (no CLI has imported TensorFlow before it), then tokenize.
_WORKER_LOAD_AND_LIST_MODULES = """
import json, sys
from pipeline.scoring_model import acquire_model
model = acquire_model(sys.argv[1])
_, counts = model.tokenize(["a fine film", "bad"])
print(json.dumps({"exit": 0, "counts": counts.tolist(),
                  "modules": sorted(sys.modules)}))
"""


def _modules_of(command):
  done = subprocess.run([sys.executable, "-c", *command], capture_output=True,
                        text=True, timeout=300)
  lines = done.stdout.strip().splitlines()
  assert lines, done.stderr[-2000:]
  report = json.loads(lines[-1])
  assert report["exit"] in (0, None), done.stderr[-2000:]
  return report, set(report["modules"])


def _keras_and_text(modules):
  return sorted(m for m in modules if m.split(".")[0] in (
      "keras", "tf_keras", "tensorflow_text"))


def test_scoring_loads_neither_keras_nor_the_text_package(
    tiny_model_dir, imdb_dir, tmp_path):
  """Catches scoring paying for Keras at start-up again (TensorFlow's eager
  Keras import, or `import tensorflow_text`, whose Keras layers import it)
  while still tokenizing with tensorflow-text's ops: the scores must come."""
  data = tmp_path / "in.parquet"
  pq.write_table(pq.read_table(imdb_dir / "test.parquet").slice(0, 5), data)
  prefix = tmp_path / "scores" / "run"
  _, modules = _modules_of(
      [_SCORE_AND_LIST_MODULES, "score", "--input", str(data),
       "--model", str(tiny_model_dir), "--output", str(prefix)])
  manifest = json.loads((tmp_path / "scores" / "run-manifest.json").read_text())
  assert manifest["counts"]["scored"] == 5
  assert "tensorflow" in modules  # the check below means something
  assert not _keras_and_text(modules), _keras_and_text(modules)


def test_a_worker_loading_the_model_loads_neither(tiny_model_dir):
  """The same for a worker process, where the model handler imports
  TensorFlow itself: catches the handler's import going back to the full
  one. `import tensorflow.keras` must still work after it."""
  report, modules = _modules_of(
      [_WORKER_LOAD_AND_LIST_MODULES,
       str(tiny_model_dir / contract.SAVED_MODEL_DIR)])
  assert all(count > 2 for count in report["counts"])  # [CLS] text [SEP]
  assert "tensorflow" in modules
  assert not _keras_and_text(modules), _keras_and_text(modules)
  later = subprocess.run(
      [sys.executable, "-c", "from runtime import quiet\n"
       "quiet.import_tensorflow(keras=False)\n"
       "import tensorflow.keras as keras\nprint(keras.layers.Dense.__name__)"],
      capture_output=True, text=True, timeout=300)
  assert later.stdout.strip().endswith("Dense"), later.stderr[-2000:]


def test_help_and_float32_scoring_load_no_copy_engine(tiny_model_dir,
                                                      imdb_dir, tmp_path):
  """Catches the copies' engines creeping into `--help` or into a worker
  that scores without them (OpenVINO is 180 MB; tf2onnx and onnx are
  training's alone)."""
  for command in (["--help"], ["score", "--help"], ["train", "--help"]):
    _, modules = _modules_of([_SCORE_AND_LIST_MODULES, *command])
    assert "click" in modules
    assert not {"openvino", "onnxruntime", "tensorflow"} & modules, command
  data = tmp_path / "in.parquet"
  pq.write_table(pq.read_table(imdb_dir / "test.parquet").slice(0, 5), data)
  _, modules = _modules_of(
      [_SCORE_AND_LIST_MODULES, "score", "--input", str(data), "--model",
       str(tiny_model_dir), "--output", str(tmp_path / "scores" / "run"),
       "--precision", "float32"])
  assert "tensorflow" in modules
  assert not {"openvino", "onnxruntime", "tf2onnx", "onnx"} & modules


def test_pytorch_kept_out_without_breaking_libraries_that_look_for_it():
  """Catches PyTorch kept out by a None in sys.modules: SciPy, which looks
  for PyTorch as it imports (as Keras does through scikit-learn where it is
  installed), then fails on import, as training after scoring in one
  process once did."""
  done = subprocess.run(
      [sys.executable, "-c",
       "import sys\nfrom runtime.quiet import keep_pytorch_out\n"
       "keep_pytorch_out()\nimport apache_beam.ml.inference.base\n"
       "import scipy.stats\n"
       "try:\n  import torch\nexcept ImportError:\n  print('refused')\n"
       "print('torch' in sys.modules)"],
      capture_output=True, text=True, timeout=300)
  assert done.stdout.split() == ["refused", "False"], done.stderr[-2000:]


def test_pytorch_is_kept_out_only_while_scoring():
  """Catches the refusal outliving `score` in its process: NNCF, asked to
  quantize after a scoring run in the same process (a notebook, the test
  suite), failed on "No module named 'torch'"."""
  done = subprocess.run(
      [sys.executable, "-c",
       "import importlib.util\nfrom runtime.quiet import pytorch_kept_out\n"
       "with pytorch_kept_out():\n"
       "  try:\n    importlib.util.find_spec('torch')\n"
       "  except ImportError:\n    print('refused')\n"
       "importlib.util.find_spec('torch')\nprint('asked')"],
      capture_output=True, text=True, timeout=300)
  # Afterwards the lookup reaches the real finders again (found or not).
  assert done.stdout.split() == ["refused", "asked"], done.stderr[-2000:]
