"""The benchmark scripts still run against the code they measure."""
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from benchmarks.throughput import make_batches

SCRIPTS = sorted(p.name for p in (pathlib.Path(__file__).parents[1] /
                                  "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_imports_and_parses_options(script):
  """Catches a script broken by a change to what it imports (a renamed
  function, a removed constant) that no run of the suite would notice."""
  done = subprocess.run([sys.executable, f"benchmarks/{script}", "--help"],
                        capture_output=True, text=True, timeout=120,
                        cwd=pathlib.Path(__file__).parents[1])
  assert done.returncode == 0, done.stderr[-2000:]
  assert "usage:" in done.stdout


def test_batches_formed_like_the_pipeline_cover_every_review_once(imdb_dir):
  """Word counts of real reviews stand in for token counts: every way of
  forming batches places each review exactly once in batches of at most 32,
  and the pipeline's sorted waves pad far less than arrival order."""
  texts = pq.read_table(imdb_dir / "test.parquet", columns=["text"])
  lengths = np.minimum([len(t.split()) for t in
                        texts["text"].to_pylist()[:6000]], 512)

  def real_per_padded(batches):
    return lengths.sum() / sum(len(b) * lengths[b].max() for b in batches)

  ways = {mode: make_batches(lengths, batch=32, mode=mode, wave=1024,
                             boundaries=list(range(16, 513, 16)))
          for mode in ("none", "sorted", "waves", "beam")}
  for mode, batches in ways.items():
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(lengths))), mode
    assert max(len(b) for b in batches) == 32, mode
  assert real_per_padded(ways["none"]) < 0.6
  assert real_per_padded(ways["waves"]) > 0.9
  assert real_per_padded(ways["sorted"]) >= real_per_padded(ways["waves"])


def test_benchmark_handler_path_labels_as_the_served_model(tiny_model_dir,
                                                          imdb_dir):
  """The benchmarks' tokenize and handler helpers on a real exported model:
  every review tokenized once within the model's length, and the handler
  path labels each review as the model's own serving signature does."""
  import tensorflow as tf
  from benchmarks import throughput
  from pipeline.scoring_model import acquire_model
  texts = pq.read_table(imdb_dir / "test.parquet",
                        columns=["text"])["text"].to_pylist()[:38]
  texts += ["A great film.", "Dull and far too long, I left early."]
  card = throughput.read_card(tiny_model_dir)
  model = acquire_model(str(tiny_model_dir / "saved_model"))
  tokens, _ = throughput.tokenize_all(model, texts, batch=16)
  lengths = [len(t) for t in tokens]
  assert len(tokens) == len(texts)
  assert max(lengths) == card.seq_length and min(lengths) < card.seq_length
  result = throughput.run_handler(tiny_model_dir, tokens,
                                  precision=card.serving_precision, batch=8)
  served = model.module.signatures["serving_default"](text=tf.constant(texts))
  np.testing.assert_array_equal(result["labels"], served["label_id"].numpy())


def test_start_up_probe_times_the_first_scored_line_not_the_exit():
  """Catches a start-up figure that is really the whole process (the line
  read only after exit) or a probe that passes when the line never came."""
  from benchmarks.scale import FIRST_SCORED, measure
  announce_then_linger = (
      "import sys, time; print('x' * 5000, file=sys.stderr, flush=True); "
      f"time.sleep(0.3); print({FIRST_SCORED!r}, file=sys.stderr, "
      "flush=True); time.sleep(1.5)")
  timed = measure([sys.executable, "-c", announce_then_linger],
                  log=lambda m: None, first_scored=True)
  assert 0.3 <= timed["seconds_to_first_scored"] <= timed["seconds"] - 1.0
  assert "first_scored_seen_at_exit" not in timed
  with pytest.raises(RuntimeError, match="never appeared"):
    measure([sys.executable, "-c", "pass"], log=lambda m: None,
            first_scored=True)
