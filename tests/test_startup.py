"""What a scoring process loads before its first batch."""
import json
import subprocess
import sys

import pyarrow.parquet as pq

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


def test_scoring_loads_neither_keras_nor_the_text_package(
    tiny_model_dir, imdb_dir, tmp_path):
  """Catches scoring paying for Keras at start-up again (TensorFlow's eager
  Keras import, or `import tensorflow_text`, whose Keras layers import it)
  while still tokenizing with tensorflow-text's ops: the scores must come."""
  data = tmp_path / "in.parquet"
  pq.write_table(pq.read_table(imdb_dir / "test.parquet").slice(0, 5), data)
  prefix = tmp_path / "scores" / "run"
  done = subprocess.run(
      [sys.executable, "-c", _SCORE_AND_LIST_MODULES, "score",
       "--input", str(data), "--model", str(tiny_model_dir),
       "--output", str(prefix)],
      capture_output=True, text=True, timeout=300)
  report = json.loads(done.stdout.strip().splitlines()[-1])
  assert report["exit"] in (0, None), done.stderr[-2000:]
  manifest = json.loads((tmp_path / "scores" / "run-manifest.json").read_text())
  assert manifest["counts"]["scored"] == 5
  modules = set(report["modules"])
  assert "tensorflow" in modules  # the check below means something
  assert not {"keras", "tf_keras", "tensorflow_text"} & modules, sorted(
      m for m in modules if "keras" in m or m.startswith("tensorflow_text"))
