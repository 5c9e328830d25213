"""Fixtures shared by the test modules.

- `tiny_checkpoint_dir`: a fresh random 2-layer BERT checkpoint directory in
  Hugging Face's layout (config.json, model.safetensors, vocab.txt), per test.
- `tiny_task_checkpoint_dir`: the same weights named as in bert-base-uncased's
  checkpoint (`bert.` prefix, LayerNorm gamma/beta, `cls.*` heads).
- `tiny_encoder_dir`: the seed-0 checkpoint imported once per session
  (`OUT/encoder`, `OUT/preprocessor`, seq_length 64): a real, fast encoder.
- `minilm_encoder_dir`: the offline all-MiniLM-L6-v2 imported once per session.
- `imdb_dir`: the IMDB parquet files (`$REVIEWSCORE_DATA`, else
  ../shared/data/imdb beside the repository, else data/imdb, downloaded
  there if missing). Where none can be had, a run that selected a test
  needing them stops before any test with one line saying how to provide
  them; tests that do not need them (test_download_imdb.py) run without.

Nothing here needs PyTorch: checkpoints are written with safetensors.numpy.
"""
import json
import os
import pathlib
import sys
from typing import List, Optional, Tuple

import numpy as np
import pytest

# pytest loads this file before any test module: TensorFlow, imported by
# them, then exposes tf-keras as the training package needs.
import train  # noqa: F401  (sets TF_USE_LEGACY_KERAS)

REPO = pathlib.Path(__file__).resolve().parents[1]

# Specials in bert-base-uncased's order, then words (sentiment words included,
# so that training on real reviews has something to learn), punctuation and
# WordPiece continuations: "unbelievable" → un ##believ ##able.
TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "!", "'", ",", "-", ".", "?", "(", ")", "\"", ":",
    "the", "a", "an", "and", "of", "to", "is", "was", "it", "this", "that",
    "in", "i", "you", "he", "she", "they", "not", "but", "for", "with", "as",
    "on", "so", "very", "just", "all", "are", "be", "have", "one", "movie",
    "film", "story", "plot", "acting", "actor", "script", "time", "such",
    "good", "great", "best", "amazing", "excellent", "wonderful", "love",
    "fun", "beautiful", "perfect", "bad", "worst", "awful", "terrible",
    "boring", "waste", "poor", "stupid", "hate", "dull", "naive", "cafe",
    "br", "un", "like", "see", "watch", "##s", "##ed", "##ing", "##ly",
    "##er", "##believ", "##able", "##y", "##e", "##a", "##o", "##n", "##t",
    "##i", "##r", "##l",
]

TINY_CONFIG = {
    "_name_or_path": "reviewscore/tiny-bert-uncased-test",
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 128,
    "model_type": "bert",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "transformers_version": "4.44.0",
    "type_vocab_size": 2,
    "vocab_size": len(TINY_VOCAB),
}


def tiny_bert_weights(seed: int = 0) -> dict:
  """HF `BertModel` tensors for TINY_CONFIG (Dense weights are [out, in]).

  Scales are larger than BERT's 0.02 initialisation so that attention is far
  from uniform and GELU far from linear: a wrong transpose, head split or
  activation then shows in the outputs.
  """
  rng = np.random.default_rng(seed)
  c = TINY_CONFIG
  h, inter = c["hidden_size"], c["intermediate_size"]

  def normal(*shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)

  def dense(prefix, n_out, n_in):
    return {f"{prefix}.weight": normal(n_out, n_in, scale=n_in ** -0.5),
            f"{prefix}.bias": normal(n_out, scale=0.1)}

  def norm(prefix):
    return {f"{prefix}.weight": 1.0 + normal(h, scale=0.1),
            f"{prefix}.bias": normal(h, scale=0.1)}

  weights = {
      "embeddings.word_embeddings.weight": normal(c["vocab_size"], h),
      "embeddings.position_embeddings.weight":
          normal(c["max_position_embeddings"], h),
      "embeddings.token_type_embeddings.weight": normal(c["type_vocab_size"], h),
      "embeddings.position_ids":
          np.arange(c["max_position_embeddings"], dtype=np.int64)[None],
      **norm("embeddings.LayerNorm"),
      **dense("pooler.dense", h, h),
  }
  for i in range(c["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    for name in ("query", "key", "value"):
      weights.update(dense(p + "attention.self." + name, h, h))
    weights.update(dense(p + "attention.output.dense", h, h))
    weights.update(norm(p + "attention.output.LayerNorm"))
    weights.update(dense(p + "intermediate.dense", inter, h))
    weights.update(dense(p + "output.dense", h, inter))
    weights.update(norm(p + "output.LayerNorm"))
  return weights


def as_task_checkpoint(weights: dict, seed: int = 1) -> dict:
  """The same encoder in bert-base-uncased's layout (`BertForPreTraining`).

  Names get the `bert.` prefix, layer norms the original TF BERT's
  `gamma`/`beta`, and the pre-training heads (`cls.*`) are added.
  """
  rng = np.random.default_rng(seed)
  h = TINY_CONFIG["hidden_size"]
  task = {}
  for name, value in weights.items():
    if ".LayerNorm." in name:
      name = name.replace(".weight", ".gamma").replace(".bias", ".beta")
    task["bert." + name] = value
  task.update({
      "cls.predictions.bias": np.zeros(len(TINY_VOCAB), np.float32),
      "cls.predictions.transform.dense.weight":
          rng.standard_normal((h, h)).astype(np.float32),
      "cls.predictions.transform.dense.bias": np.zeros(h, np.float32),
      "cls.predictions.transform.LayerNorm.gamma": np.ones(h, np.float32),
      "cls.predictions.transform.LayerNorm.beta": np.zeros(h, np.float32),
      "cls.seq_relationship.weight":
          rng.standard_normal((2, h)).astype(np.float32),
      "cls.seq_relationship.bias": np.zeros(2, np.float32),
  })
  return task


def write_tiny_checkpoint(directory, *, seed: int = 0,
                          task_layout: bool = False) -> pathlib.Path:
  """Writes config.json, tokenizer_config.json, vocab.txt, model.safetensors.

  The same seed gives byte-identical files (so the same sha256); with
  `task_layout` the tensors are named as in bert-base-uncased's checkpoint.
  """
  from safetensors.numpy import save_file
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(TINY_CONFIG, indent=2))
  (directory / "tokenizer_config.json").write_text(json.dumps(
      {"do_lower_case": True, "tokenizer_class": "BertTokenizer",
       "model_max_length": TINY_CONFIG["max_position_embeddings"]}))
  (directory / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n",
                                       encoding="utf-8")
  weights = tiny_bert_weights(seed)
  if task_layout:
    weights = as_task_checkpoint(weights)
  save_file(weights, str(directory / "model.safetensors"),
            metadata={"format": "pt"})
  return directory


@pytest.fixture
def tiny_checkpoint_dir(tmp_path) -> pathlib.Path:
  """A tiny random BERT checkpoint (seed 0) that the test may modify."""
  return write_tiny_checkpoint(tmp_path / "tiny-bert")


@pytest.fixture
def tiny_task_checkpoint_dir(tmp_path) -> pathlib.Path:
  """The same seed-0 encoder in bert-base-uncased's task-checkpoint layout."""
  return write_tiny_checkpoint(tmp_path / "tiny-bert-for-pretraining",
                               task_layout=True)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> pathlib.Path:
  """The seed-0 tiny checkpoint imported with seq_length 64; do not modify."""
  from train.encoders.hf_checkpoint import open_checkpoint
  from train.encoders.importer import import_encoder
  source = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert"))
  return import_encoder(open_checkpoint(source),
                        tmp_path_factory.mktemp("tiny-encoder"), seq_length=64)


@pytest.fixture
def assert_same_training_state():
  """Compares two training runs' latest checkpoints tensor by tensor.

  A checkpoint holds the weights, the optimizer's step and Adam moments and
  the epoch's running loss and accuracy sums: a resume that lost any of
  them, or replayed other batches, ends with other values.
  """
  import tensorflow as tf

  def tensors(run_dir):
    reader = tf.train.load_checkpoint(str(pathlib.Path(run_dir) / "checkpoints"))
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
            and not name.startswith("save_counter")}

  def check(run_dir, reference_dir, *, rtol=1e-5, atol=1e-6):
    got, want = tensors(run_dir), tensors(reference_dir)
    assert sorted(got) == sorted(want)
    differ = {}
    for name, value in want.items():
      a = np.asarray(got[name], np.float64)
      b = np.asarray(value, np.float64)
      if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol):
        differ[name] = (float(np.max(np.abs(a - b)))
                        if a.shape == b.shape else float("inf"))
    worst = sorted(differ.items(), key=lambda kv: -kv[1])[:5]
    assert not differ, (f"{len(differ)} of {len(want)} checkpoint tensors "
                        f"differ from the reference run; e.g. {worst}")
  return check


@pytest.fixture(scope="session")
def minilm_encoder_dir(tmp_path_factory) -> pathlib.Path:
  """all-MiniLM-L6-v2 (sha256-checked) imported with seq_length 128 (~10 s)."""
  from train.encoders.hf_checkpoint import CheckpointError, open_minilm
  from train.encoders.importer import import_encoder
  try:
    checkpoint = open_minilm()
  except CheckpointError as e:  # not installed: scripts/bootstrap.sh does it
    pytest.fail(str(e))
  return import_encoder(checkpoint, tmp_path_factory.mktemp("minilm"))


_IMDB_SPLITS = ("train", "test", "unsup")
_imdb_found: Optional[Tuple[Optional[pathlib.Path], str]] = None


def locate_imdb() -> Tuple[Optional[pathlib.Path], str]:
  """(the IMDB data folder, "") or (None, one line saying how to provide it).

  $REVIEWSCORE_DATA, else ../shared/data/imdb beside the repository, else
  data/imdb in it (where run_local.sh downloads the data), downloaded there
  with `reviewscore download-imdb` if it is missing (offline this fails
  within seconds). Looked up once per process.
  """
  global _imdb_found
  if _imdb_found is None:
    _imdb_found = _locate_imdb()
  return _imdb_found


def _locate_imdb() -> Tuple[Optional[pathlib.Path], str]:
  root = os.environ.get("REVIEWSCORE_DATA")
  candidates = ([pathlib.Path(root)] if root else
                [REPO.parent / "shared" / "data" / "imdb", REPO / "data" / "imdb"])
  for path in candidates:
    if all((path / f"{split}.parquet").is_file() for split in _IMDB_SPLITS):
      return path.resolve(), ""
  provide = ("set REVIEWSCORE_DATA to a folder with train.parquet, "
             "test.parquet and unsup.parquet (`reviewscore download-imdb DIR` "
             "writes them)")
  if root:
    return None, (f"IMDB data not found in {root} ($REVIEWSCORE_DATA): "
                  f"{provide}, or unset it to use ../shared/data/imdb or "
                  "data/imdb")
  from train.data.imdb_download import URL_ENV, DownloadError, download_imdb
  try:
    # Test workers (pytest -n) that both find no data take turns there: the
    # later one finds the earlier one's files.
    download_imdb(candidates[-1])
  except DownloadError as e:
    reason = str(e).split("; ")[0]  # without its advice about `train --data`
    return None, (f"IMDB data not found in ../shared/data/imdb or data/imdb, "
                  f"and {reason}: {provide}, or run the tests where the "
                  f"download works (${URL_ENV} names a mirror)")
  return candidates[-1].resolve(), ""


@pytest.hookimpl(trylast=True)  # after -k/-m deselected what they leave out
def pytest_collection_modifyitems(session, config, items):
  """Without the IMDB data, stops the run before any test, in one line,
  when a selected test needs it (the tests that do not run on their own)."""
  if config.option.collectonly or not any(
      "imdb_dir" in item.fixturenames for item in items):
    return
  path, why = locate_imdb()
  if path is not None:
    return
  if hasattr(config, "workerinput"):
    # A pytest-xdist worker: pytest.exit here is an internal error of the
    # controller; a worker that collected nothing and asks to stop ends the
    # run with this one line.
    items[:] = []
    session.shouldstop = why
  else:
    pytest.exit(why)


@pytest.fixture(scope="session")
def imdb_dir() -> pathlib.Path:
  """Directory of the IMDB train/test/unsup parquet files (read only),
  found or downloaded by `locate_imdb`."""
  path, why = locate_imdb()
  if path is None:
    pytest.fail(why)
  return path


@pytest.fixture(scope="session")
def tiny_training_data(imdb_dir, tmp_path_factory) -> pathlib.Path:
  """200 training and 40 test reviews of the real IMDB data, balanced."""
  import pyarrow.parquet as pq
  data = tmp_path_factory.mktemp("tiny-model-data")
  for split, per_class in (("train", 100), ("test", 20)):
    table = pq.read_table(imdb_dir / f"{split}.parquet",
                          columns=["review_id", "text", "label"])
    labels = table["label"].to_numpy()
    rows = np.concatenate([np.flatnonzero(labels == c)[:per_class]
                           for c in (0, 1)])
    pq.write_table(table.take(np.sort(rows)), data / f"{split}.parquet")
  return data


def _train_tiny(data, encoder, out, **options) -> pathlib.Path:
  from train.run import train_and_export
  from train.loops.trainer import TrainSettings
  train_and_export(
      data_path=data, encoder=str(encoder), out=out,
      settings=TrainSettings(batch_size=8, epochs=1, seq_length=64,
                             truncation="head", pooling="cls",
                             precision="float32", max_examples=200,
                             checkpoint_every_steps=1000),
      progress=lambda message: None, **options)
  return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_encoder_dir, tiny_training_data, tmp_path_factory
                   ) -> pathlib.Path:
  """A tiny real model (saved_model/ + model_card.json), trained in ~10 s.

  Fine-tuned on 200 real IMDB reviews from the tiny encoder (seq_length 64);
  the scoring tests treat it as read-only. No OpenVINO copies: these tests
  score the SavedModel in TensorFlow (`tiny_int8_model_dir` has both).
  """
  return _train_tiny(tiny_training_data, tiny_encoder_dir,
                     tmp_path_factory.mktemp("tiny-model") / "model",
                     int8=False, float32_copy_wanted=False)


@pytest.fixture(scope="session")
def tiny_int8_model_dir(tiny_encoder_dir, tiny_training_data,
                        tmp_path_factory) -> pathlib.Path:
  """The tiny model, trained the same way, with its int8 copy offered (and
  its float32 copy, which CPU workers score float32 with).

  The guard is widened to 20 points: the tiny model is right on about 60%
  of 40 validation reviews, where one review is 2.5 points. The real model's
  guard (0.2 points) is measured in benchmarks/int8_runtime.py.
  """
  return _train_tiny(tiny_training_data, tiny_encoder_dir,
                     tmp_path_factory.mktemp("tiny-int8-model") / "model",
                     int8=True, int8_max_accuracy_drop=0.2)


@pytest.fixture(scope="session")
def crash_test_reviews(imdb_dir, tmp_path_factory) -> pathlib.Path:
  """120 IMDB training reviews, 60 of each class, as one Parquet file."""
  import pyarrow.parquet as pq
  table = pq.read_table(imdb_dir / "train.parquet",
                        columns=["review_id", "text", "label"])
  labels = table["label"].to_numpy()
  rows = np.concatenate([np.flatnonzero(labels == c)[:60] for c in (0, 1)])
  path = tmp_path_factory.mktemp("crash-data") / "reviews.parquet"
  pq.write_table(table.take(np.sort(rows)), path)
  return path


def crash_test_command(data, encoder, out) -> List[str]:
  """The `reviewscore train` the crash tests kill, resume and compare: two
  epochs of 12 steps, a checkpoint every 5, dropout on, float32, seeded;
  without the OpenVINO copies, made after export, where no cut falls
  (`test_int8` and `test_float32_copy` hold them)."""
  return [sys.executable, "-m", "reviewscore.cli", "train",
          "--data", str(data), "--encoder", str(encoder), "--dropout", "0.1",
          "--out", str(out), "--epochs", "2", "--batch-size", "8",
          "--seq-length", "32", "--checkpoint-every", "5", "--patience", "0",
          "--truncation", "head", "--pooling", "cls", "--precision", "float32",
          "--seed", "42", "--no-int8", "--no-float32-copy"]


@pytest.fixture(scope="session")
def unbroken_crash_test_run(crash_test_reviews, tiny_encoder_dir,
                            tmp_path_factory) -> pathlib.Path:
  """The crash tests' command run once unbroken: the run every killed and
  resumed one must end as (its model directory)."""
  import subprocess
  out = tmp_path_factory.mktemp("crash-reference") / "unbroken"
  done = subprocess.run(crash_test_command(crash_test_reviews,
                                           tiny_encoder_dir, out),
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return out


@pytest.fixture
def sigkill_when():
  """Starts a command and SIGKILLs it in the state where `ready()` holds.

  For the crash tests. Every `poll_s` the command is frozen (SIGSTOP),
  `ready()` looks at what it has written, and the command is either killed
  right there (SIGKILL, so the kill lands on exactly the state `ready()` saw)
  or let go on (SIGCONT). Returns True when the kill followed `ready()`, and
  False when `timeout_s` ran out first (the command is killed all the same):
  tests assert it, so a moment that never comes fails the test instead of
  turning into a kill at a random point. Fails if the command ends first, so
  a test cannot pass by letting the run finish. The command must be one
  process (no wrapper such as `nice` that forks).
  """
  import signal
  import subprocess
  import time

  def run_and_kill(command, ready, *, timeout_s=240.0, poll_s=0.02):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    seen = False
    try:
      deadline = time.monotonic() + timeout_s
      while time.monotonic() < deadline and process.poll() is None:
        process.send_signal(signal.SIGSTOP)
        if ready():
          seen = True
          break
        process.send_signal(signal.SIGCONT)
        time.sleep(poll_s)
      assert process.poll() is None, "the run ended before it could be killed"
      process.send_signal(signal.SIGKILL)
      process.wait()
      assert process.returncode == -signal.SIGKILL, process.returncode
    finally:
      if process.poll() is None:
        process.kill()
        process.wait()
    return seen
  return run_and_kill


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: takes a minute or more (real training runs, killed or "
      "multi-process pipelines); `pytest -m 'not slow'` leaves them out")
