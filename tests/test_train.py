"""Training end to end on a tiny real BERT and real IMDB reviews."""
import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import tensorflow as tf
import tensorflow_text  # noqa: F401
from tensorflow.core.protobuf import saved_model_pb2

from reviewscore.cli import main
from train.data import reviews as data_lib
from train.run import RunExists, train_and_export
from train.loops.checkpoints import ResumeMismatch
from train.loops.trainer import TrainSettings, epoch_batches

# Explicit, so that no test depends on the defaults or on the host CPU.
TINY = dict(batch_size=8, seq_length=64, checkpoint_every_steps=1000,
            truncation="head", pooling="cls", precision="float32")


def _balanced_rows(path, per_class, *, offset=0):
  table = pq.read_table(path, columns=["review_id", "text", "label"])
  labels = table["label"].to_numpy()
  rows = np.concatenate([np.flatnonzero(labels == c)[offset:offset + per_class]
                         for c in (0, 1)])
  return table.take(np.sort(rows))


@pytest.fixture(scope="session")
def small_imdb(imdb_dir, tmp_path_factory):
  """train.parquet (300) and test.parquet (100) of real reviews."""
  root = tmp_path_factory.mktemp("small_imdb")
  pq.write_table(_balanced_rows(imdb_dir / "train.parquet", 150),
                 root / "train.parquet")
  pq.write_table(_balanced_rows(imdb_dir / "test.parquet", 50),
                 root / "test.parquet")
  return root


@pytest.fixture(scope="session")
def small_tree(small_imdb, tmp_path_factory):
  """The same reviews as an aclImdb-style folder tree, with an unsup folder."""
  root = tmp_path_factory.mktemp("aclImdb")
  for split in ("train", "test"):
    for row in pq.read_table(small_imdb / f"{split}.parquet").to_pylist():
      name = row["review_id"].split("/")[-1]
      folder = root / split / ("pos" if row["label"] else "neg")
      folder.mkdir(parents=True, exist_ok=True)
      (folder / f"{name}.txt").write_text(row["text"], encoding="utf-8")
  (root / "train" / "unsup").mkdir()
  (root / "train" / "unsup" / "0_0.txt").write_text("unlabelled")
  return root


@pytest.fixture(scope="session")
def trained_model(small_tree, tiny_encoder_dir, tmp_path_factory):
  """A model trained through the CLI on the folder tree, two epochs."""
  out = tmp_path_factory.mktemp("models") / "tiny"
  result = CliRunner().invoke(main, [
      "train", "--data", str(small_tree), "--encoder", str(tiny_encoder_dir),
      "--out", str(out), "--epochs", "2", "--batch-size", "8",
      "--seq-length", "64", "--truncation", "head+tail", "--head-tokens", "16",
      "--patience", "0", "--pooling", "cls", "--precision", "float32"])
  assert result.exit_code == 0, result.output
  return out


def test_tree_and_parquet_read_the_same_reviews(small_imdb, small_tree):
  from_tree = data_lib.read_labelled(small_tree, "train")
  from_parquet = data_lib.read_labelled(small_imdb, "train")
  assert len(from_tree) == len(from_parquet) == 300
  by_id = dict(zip(from_parquet.ids, zip(from_parquet.texts, from_parquet.labels)))
  for review_id, text, label in zip(from_tree.ids, from_tree.texts,
                                    from_tree.labels):
    assert by_id[review_id] == (text, label)  # ids are train/pos/12_9 in both
  assert data_lib.read_labelled(small_tree, "test").labels.sum() == 50


def test_split_is_reproducible_and_disjoint(small_imdb):
  data = data_lib.read_labelled(small_imdb, "train")
  train_a, val_a = data_lib.split_train_validation(data, seed=42)
  train_b, val_b = data_lib.split_train_validation(data, seed=42)
  _, val_c = data_lib.split_train_validation(data, seed=7)
  assert (len(train_a), len(val_a)) == (240, 60)
  assert val_a.ids == val_b.ids and train_a.ids == train_b.ids
  assert not set(train_a.ids) & set(val_a.ids)
  assert val_a.ids != val_c.ids
  assert train_a.fingerprint() == train_b.fingerprint() != val_a.fingerprint()


def test_epoch_batches_are_a_function_of_seed_and_epoch():
  lengths = np.random.default_rng(0).integers(3, 64, size=100)
  first = epoch_batches(lengths, batch_size=8, seed=1, epoch=0, length_bucketing=True)
  again = epoch_batches(lengths, batch_size=8, seed=1, epoch=0, length_bucketing=True)
  other = epoch_batches(lengths, batch_size=8, seed=1, epoch=1, length_bucketing=True)
  assert all((a == b).all() for a, b in zip(first, again))
  assert not all((a == b).all() for a, b in zip(first, other))
  assert sorted(np.concatenate(first).tolist()) == list(range(100))
  # Bucketing: within-batch length spread is far below that of random batches.
  spread = np.mean([np.ptp(lengths[b]) for b in first])
  random_spread = np.mean([np.ptp(lengths[b]) for b in epoch_batches(
      lengths, batch_size=8, seed=1, epoch=0, length_bucketing=False)])
  assert spread < random_spread / 3


def test_export_has_every_artifact(trained_model):
  card = json.loads((trained_model / "model_card.json").read_text())
  # One graph per classify precision: a second copy of each (saved as a
  # tf.function attribute beside its signature) costs every worker's load.
  saved = saved_model_pb2.SavedModel()
  saved.ParseFromString(
      (trained_model / "saved_model" / "saved_model.pb").read_bytes())
  classify_graphs = [
      f.signature.name for f in saved.meta_graphs[0].graph_def.library.function
      if "classify_tokens" in f.signature.name
      and "signature_wrapper" not in f.signature.name]
  assert len(classify_graphs) == len(card["precisions"]), classify_graphs
  assert card["data"]["test_reviews_in_training"] == 0  # IMDB's are disjoint
  for key in ("encoder", "seq_length", "truncation", "class_names", "threshold",
              "hyperparameters", "metrics", "data", "versions", "created_at",
              "model_fingerprint"):
    assert key in card, key
  assert card["encoder"]["checkpoint"]["weights_sha256"]
  assert card["truncation"] == {"seq_length": 64, "truncation": "head+tail",
                                "head_tokens": 16, "tail_tokens": 46,
                                "markup": "line breaks removed"}
  assert set(card["metrics"]) == {"train", "validation", "test"}
  assert card["metrics"]["test"]["count"] == 100
  assert card["data"]["train"]["rows"] == 240
  assert card["training"]["steps"] == card["training"]["total_steps"] == 60
  history = json.loads((trained_model / "history.json").read_text())
  assert [h["epoch"] for h in history] == [1, 2]
  assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history[0])
  # The exported epoch is the one of lowest validation loss (the first of
  # equals), whichever it is on this CPU, and the card's validation metrics
  # are its own. That a best epoch before the last is really restored is
  # test_the_best_epoch_is_exported_when_it_is_not_the_last's, where the
  # last epoch is made the worse one on every machine.
  losses = [h["val_loss"] for h in history]
  exported = card["training"]["exported_epoch"]
  assert exported == card["training"]["best_epoch"] == 1 + losses.index(
      min(losses))
  assert card["training"]["exported_weights"] == "lowest validation loss"
  assert card["metrics"]["validation"]["log_loss"] == pytest.approx(
      history[exported - 1]["val_loss"], rel=1e-5)
  png = (trained_model / "training_curves.png").read_bytes()
  assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_validation_is_scored_once_per_epoch_and_not_again_for_the_card(
    small_imdb, tiny_encoder_dir, tmp_path, monkeypatch):
  """Catches: the validation split scored again after training for the
  card (a whole pass over it per run) instead of reusing the exported
  epoch's logits."""
  from train.loops import trainer as trainer_lib
  scored = []
  real = trainer_lib.predict_logits

  def counted(logits_fn, data, **kwargs):
    scored.append(len(data))
    return real(logits_fn, data, **kwargs)

  monkeypatch.setattr(trainer_lib, "predict_logits", counted)
  # Progress after every batch, as a long split shows it every 30 s.
  monkeypatch.setattr(trainer_lib, "PREDICT_PROGRESS_EVERY_S", 0.0)
  said = []
  card = train_and_export(
      data_path=small_imdb, encoder=str(tiny_encoder_dir), out=tmp_path / "m",
      settings=TrainSettings(epochs=2, max_examples=120, patience=0, **TINY),
      progress=said.append, max_test_examples=80)
  validation = card["metrics"]["validation"]["count"]
  assert scored == [validation, validation, 80]  # two epochs, then the test
  assert any(m.startswith("scoring the test split: 64/80 reviews, ") for m in said)
  assert any(m.startswith("epoch 2 validation: ") for m in said) == (
      validation > 64)


def test_the_best_epoch_is_exported_when_it_is_not_the_last(
    small_imdb, tiny_encoder_dir, tmp_path, monkeypatch):
  """Catches: the weights of the last epoch exported (or vouched for by the
  card) when an earlier epoch had the lower validation loss. Which epoch is
  best on real data can flip with a CPU's rounding, so the second epoch's
  validation is made confidently wrong (every logit 20 on the wrong side)
  as the trainer sees it: epoch 1 is then the best on every machine, and
  its weights, captured as they were scored, must be the SavedModel's."""
  from schemas import model_dir as contract
  from train.loops import trainer as trainer_lib
  real = trainer_lib.predict_logits
  seen = {}

  def second_epoch_worse(logits_fn, data, **kwargs):
    logits = real(logits_fn, data, **kwargs)
    what = kwargs.get("what", "")
    if what in ("epoch 1 validation", "epoch 2 validation"):
      seen[what] = (data, logits.copy())
    if what == "epoch 2 validation":
      return np.where(data.labels == 1, -20.0, 20.0).astype(
          np.float32).reshape(logits.shape)
    return logits

  monkeypatch.setattr(trainer_lib, "predict_logits", second_epoch_worse)
  out = tmp_path / "m"
  card = train_and_export(
      data_path=small_imdb, encoder=str(tiny_encoder_dir), out=out,
      settings=TrainSettings(epochs=2, max_examples=120, patience=0, **TINY),
      progress=lambda m: None, max_test_examples=20)
  history = json.loads((out / "history.json").read_text())
  assert history[1]["val_loss"] > 10 > history[0]["val_loss"]  # as injected
  assert card["training"]["best_epoch"] == card["training"][
      "exported_epoch"] == 1
  assert card["metrics"]["validation"]["log_loss"] == pytest.approx(
      history[0]["val_loss"], rel=1e-5)
  data, first = seen["epoch 1 validation"]
  _, second = seen["epoch 2 validation"]
  positions = np.arange(data.word_ids.shape[1])[None, :]
  mask = (positions < data.lengths[:, None]).astype(np.int32)
  model = tf.saved_model.load(str(out / "saved_model"))
  exported = model.signatures[contract.CLASSIFY_SIGNATURE](
      input_word_ids=tf.constant(data.word_ids),
      input_mask=tf.constant(mask))[contract.OUTPUT_LOGITS].numpy()
  exported = exported.reshape(first.shape)
  np.testing.assert_allclose(exported, first, atol=1e-4)
  # The premise that makes this mean something: the second epoch's weights
  # score otherwise.
  assert np.abs(second - first).max() > 1e-3


def test_signatures_agree_and_truncate_head_plus_tail(trained_model):
  model = tf.saved_model.load(str(trained_model / "saved_model"))
  texts = ["word " * 10 + "great", "awful " * 200 + "the end", "ok"]
  served = model.signatures["serving_default"](text=tf.constant(texts))
  tokens = model.signatures["tokenize"](text=tf.constant(texts))
  ids, counts = tokens["input_word_ids"].numpy(), tokens["num_tokens"].numpy()
  assert ids.shape == (3, 64) and counts[1] == 64 and counts[2] == 3
  # head+tail: the last wordpieces of the long review are kept before [SEP].
  end_ids = model.signatures["tokenize"](text=tf.constant(["the end"]))
  assert list(ids[1, 61:63]) == list(end_ids["input_word_ids"].numpy()[0, 1:3])
  # Dynamic padding (each row cut to its own length) changes nothing.
  for row, count in enumerate(counts):
    alone = model.signatures["classify_tokens"](
        input_word_ids=tf.constant(ids[row:row + 1, :count]),
        input_mask=tf.ones([1, count], tf.int32))
    np.testing.assert_allclose(alone["probability"].numpy()[0],
                               served["probability"].numpy()[row], atol=1e-5)
  # HTML line breaks are dropped by the exported tokenizer, as in training.
  broken = model.signatures["tokenize"](text=tf.constant(
      ["a great<br /><br />film<BR>ok", "a great film ok"]))["input_word_ids"]
  np.testing.assert_array_equal(broken[0], broken[1])
  labels = served["label_id"].numpy()
  threshold = json.loads((trained_model / "model_card.json").read_text())[
      "threshold"]
  assert ((served["probability"].numpy() >= threshold) == (labels == 1)).all()
  both = model.signatures["classify_tokens_bfloat16"](
      input_word_ids=tf.constant(ids), input_mask=tf.constant((ids > 0).astype(np.int32)))
  np.testing.assert_allclose(both["probability"].numpy(),
                             served["probability"].numpy(), atol=0.05)


def test_evaluate_and_predict_commands(trained_model, small_imdb, tmp_path):
  runner = CliRunner()
  result = runner.invoke(main, ["evaluate", "--model", str(trained_model),
                                "--data", str(small_imdb), "--out", str(tmp_path)])
  assert result.exit_code == 0, result.output
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss",
              "confusion_matrix"):
    assert key in metrics
  assert metrics["count"] == 100
  assert sum(map(sum, metrics["confusion_matrix"]["rows_true_cols_predicted"])) == 100
  for png in ("reliability.png", "score_histogram.png", "roc.png", "confusion.png"):
    assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
  card = json.loads((trained_model / "model_card.json").read_text())
  assert metrics["accuracy"] == pytest.approx(card["metrics"]["test"]["accuracy"])

  texts = pq.read_table(small_imdb / "test.parquet")["text"].to_pylist()[:3]
  texts = [t.replace("\n", " ") for t in texts]
  result = runner.invoke(main, ["predict", "--model", str(trained_model)],
                         input="\n".join(texts) + "\n")
  assert result.exit_code == 0, result.output
  lines = result.output.strip().splitlines()
  assert len(lines) == 3
  for line, text in zip(lines, texts):
    score, label, echoed = line.split("\t", 2)
    assert 0.0 <= float(score) <= 1.0 and label in ("neg", "pos")
    assert echoed == text
  undecodable = runner.invoke(main, ["predict", "--model", str(trained_model)],
                              input=b"fine\n\xff\xfe not text\n")
  assert undecodable.exit_code == 1, undecodable.output
  assert "stdin line 2 is not UTF-8 text" in undecodable.output
  assert isinstance(undecodable.exception, SystemExit)


@pytest.mark.slow
def test_resume_after_interruption_ends_like_an_unbroken_run(
    small_imdb, tiny_encoder_dir, tmp_path, assert_same_training_state):
  """Cut in the middle of epoch 2 (3 steps after its last checkpoint) and
  resumed, a run ends with the weights, optimizer state, history and metrics
  of an unbroken one.

  Catches a resume that loses the Adam moments or the step (so the learning
  rate), replays other batches, restarts the epoch's running sums, or keeps
  initial instead of restored weights, and dropout masks that depend on the
  process rather than on (seed, step) (train/model/seeded_dropout.py): dropout is
  on in the encoder and the head. The initial weights are the same in both
  runs (a seeded head), and another global seed is set before the resume,
  whose fresh head the restore must overwrite and which must not reach the
  masks.
  test_train_faults holds the same claim for a SIGKILLed CLI run with the
  defaults.
  """
  import tf_keras
  encoder = str(tiny_encoder_dir)
  settings = TrainSettings(epochs=2, max_examples=120, patience=0, dropout=0.1,
                           **{**TINY, "checkpoint_every_steps": 4})
  steps_seen = []

  class Interrupted(Exception):
    pass

  def stop_in_epoch_2(message):
    if message.startswith("epoch 2/2 step 7/"):  # step 19 of 24
      raise Interrupted

  out = tmp_path / "run"
  tf_keras.utils.set_random_seed(settings.seed)
  with pytest.raises(Interrupted):
    train_and_export(data_path=small_imdb, encoder=encoder,
                     out=out, settings=settings, progress=stop_in_epoch_2,
                     log_every_steps=1, max_test_examples=10)
  assert not (out / "model_card.json").exists()
  with pytest.raises(RunExists, match="already holds a training run"):
    train_and_export(data_path=small_imdb, encoder=encoder,
                     out=out, settings=settings, progress=lambda m: None)
  tf_keras.utils.set_random_seed(settings.seed + 1)
  card = train_and_export(data_path=small_imdb, encoder=encoder,
                          out=out, settings=settings, resume=True,
                          progress=steps_seen.append, log_every_steps=1,
                          max_test_examples=10)
  # The last checkpoint before the cut: mid-epoch, steps 17-19 are redone.
  assert any(m.startswith("resumed from step 16 of 24") for m in steps_seen)
  assert card["training"]["steps"] == card["training"]["total_steps"] == 24
  assert card["training"]["epochs_run"] == 2
  tf_keras.utils.set_random_seed(settings.seed)
  unbroken = train_and_export(data_path=small_imdb, encoder=encoder,
                              out=tmp_path / "unbroken", settings=settings,
                              progress=lambda m: None, max_test_examples=10)
  assert unbroken["training"]["steps"] == card["training"]["steps"]
  assert card["data"] == unbroken["data"]
  assert_same_training_state(out, tmp_path / "unbroken")
  resumed_history = json.loads((out / "history.json").read_text())
  unbroken_history = json.loads((tmp_path / "unbroken" / "history.json").read_text())
  for got, want in zip(resumed_history, unbroken_history, strict=True):
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "steps"):
      assert got[key] == pytest.approx(want[key], rel=1e-5), (got, want)
  assert card["training"]["best_epoch"] == unbroken["training"]["best_epoch"]
  for split in ("validation", "test"):  # of the exported weights
    for key in ("log_loss", "accuracy"):
      assert card["metrics"][split][key] == pytest.approx(
          unbroken["metrics"][split][key], rel=1e-5), (split, key)
  # A finished run can be exported again with other stopping choices.
  relaxed = dataclasses.replace(settings, patience=3)
  again = train_and_export(data_path=small_imdb, encoder=encoder,
                           out=out, settings=relaxed, resume=True,
                           restore_best=False, progress=lambda m: None,
                           max_test_examples=10)
  assert again["training"]["steps"] == 24
  history = json.loads((out / "history.json").read_text())
  lowest = min(history, key=lambda epoch: epoch["val_loss"])["epoch"]
  assert again["training"]["best_epoch"] == lowest  # the truth, not the export
  assert again["training"]["exported_epoch"] == 2
  assert again["training"]["exported_weights"] == "last epoch"
  with pytest.raises(ResumeMismatch, match="learning_rate"):
    train_and_export(data_path=small_imdb, encoder=encoder,
                     out=out, settings=dataclasses.replace(settings,
                                                           learning_rate=1e-3),
                     resume=True, progress=lambda m: None)


def test_a_model_or_the_inputs_are_never_trained_over(trained_model,
                                                      small_imdb,
                                                      tiny_encoder_dir,
                                                      tmp_path):
  """Catches: a finished model whose checkpoints and state were deleted (to
  save space) replaced without a word, and an --out in the data folder or
  the encoder (its .json files then read as data parts)."""
  from train.run import OutOverlapsInputs
  kept = tmp_path / "kept"
  kept.mkdir()
  card = (trained_model / "model_card.json").read_text()
  (kept / "model_card.json").write_text(card)
  run = dict(data_path=small_imdb, encoder=str(tiny_encoder_dir),
             settings=TrainSettings(**TINY), progress=lambda m: None)
  with pytest.raises(RunExists, match="already holds a training run or model"):
    train_and_export(out=kept, **run)
  assert (kept / "model_card.json").read_text() == card
  for out in (small_imdb, small_imdb / "model", tiny_encoder_dir / "m",
              small_imdb.parent):
    with pytest.raises(OutOverlapsInputs, match="write the model to a folder"):
      train_and_export(out=out, **run)
  assert not (small_imdb / "model").exists()


def test_a_class_without_training_reviews_is_refused(small_imdb,
                                                     tiny_encoder_dir,
                                                     tmp_path):
  """Catches: 0/1 labels that are all 1 training a "neg/pos" model that
  never saw a negative review (validation accuracy 1.0), and --class-names
  naming a class the data lacks."""
  from train.data.reviews import DataError
  from train.data.labels import LabelScheme
  table = pq.read_table(small_imdb / "train.parquet")
  positive = table.filter(pc.equal(table["label"], 1))
  pq.write_table(positive, tmp_path / "positive.parquet")
  run = dict(encoder=str(tiny_encoder_dir), settings=TrainSettings(**TINY),
             progress=lambda m: None)
  with pytest.raises(DataError, match="no training review of class 'neg'"):
    train_and_export(data_path=tmp_path / "positive.parquet",
                     out=tmp_path / "m1", **run)
  assert not (tmp_path / "m1").exists()  # a refused run leaves no folder
  with pytest.raises(DataError, match="of class 'mid'"):
    train_and_export(data_path=small_imdb / "train.parquet", out=tmp_path / "m2",
                     label_scheme=LabelScheme.from_options(
                         class_names="neg,pos,mid"), **run)


def test_test_reviews_that_are_training_reviews_are_counted(
    small_imdb, tiny_encoder_dir, tmp_path):
  """Catches: a test split sharing reviews with training (a copy under new
  ids) reported as held-out metrics without a word."""
  data = tmp_path / "data"
  data.mkdir()
  train = _balanced_rows(small_imdb / "train.parquet", 20)
  pq.write_table(train, data / "train.parquet")
  copied = train.slice(0, 6).set_column(
      0, "review_id", pa.array([f"copy{i}" for i in range(6)]))
  test = pa.concat_tables([copied, _balanced_rows(small_imdb / "test.parquet", 5)])
  pq.write_table(test, data / "test.parquet")
  said = []
  card = train_and_export(data_path=data, encoder=str(tiny_encoder_dir),
                          out=tmp_path / "m", progress=said.append,
                          settings=TrainSettings(epochs=1, **TINY))
  assert card["data"]["test_reviews_in_training"] == 6
  assert any(m.startswith("warning: 6 test reviews are also training")
             for m in said)


def test_a_reexport_cut_midway_leaves_no_card_over_new_weights(
    trained_model, small_tree, tiny_encoder_dir, tmp_path, monkeypatch):
  """Catches: `--resume` of a finished run re-exporting (here the last
  epoch's weights, --keep-last) and cut after the new SavedModel was moved
  in but before its card: the old card vouched for other weights. The cut
  is a KeyboardInterrupt right after the move (the test's replace_dir),
  which must have been reached; the card must already be gone there; the
  directory must then read as unfinished to `score`, and the same command
  must finish it."""
  import shutil
  from train import run as run_lib
  out = tmp_path / "tiny"
  shutil.copytree(trained_model, out)
  assert (out / "model_card.json").exists()
  cuts = []

  def cut(staging, final):
    cuts.append((staging, final, (out / "model_card.json").exists()))
    shutil.rmtree(final)
    staging.rename(final)
    raise KeyboardInterrupt
  monkeypatch.setattr(run_lib, "replace_dir", cut)
  command = [
      "train", "--data", str(small_tree), "--encoder", str(tiny_encoder_dir),
      "--out", str(out), "--epochs", "2", "--batch-size", "8",
      "--seq-length", "64", "--truncation", "head+tail", "--head-tokens", "16",
      "--patience", "0", "--pooling", "cls", "--precision", "float32",
      "--resume", "--keep-last"]
  result = CliRunner().invoke(main, command)
  # The cut happened, once, where the new SavedModel replaces the old, and
  # the old card was removed before it.
  assert cuts == [(out / "saved_model.partial", out / "saved_model", False)]
  assert result.exit_code == 1, result.output  # click: Aborted!
  assert "Aborted!" in result.output, result.output
  # On disk: the new SavedModel, no card, the run's state kept for a rerun.
  assert (out / "saved_model" / "saved_model.pb").exists()
  assert not (out / "saved_model.partial").exists()
  assert not (out / "model_card.json").exists()
  assert (out / "checkpoints").is_dir()
  # Unfinished to the scoring side too: refused in one line.
  pq.write_table(pa.table({"review_id": ["r1"], "text": ["a fine film"]}),
                 tmp_path / "one.parquet")
  scored = CliRunner().invoke(main, [
      "score", "--input", str(tmp_path / "one.parquet"), "--model", str(out),
      "--output", str(tmp_path / "scores" / "s")])
  assert scored.exit_code == 1, scored.output
  assert "no model_card.json (not a finished model directory" in \
      scored.output, scored.output
  assert not (tmp_path / "scores").exists()
  # The same command, uncut, finishes the re-export: a card over its own
  # SavedModel's files.
  monkeypatch.undo()
  again = CliRunner().invoke(main, command)
  assert again.exit_code == 0, again.output
  card = json.loads((out / "model_card.json").read_text())
  assert card["training"]["exported_weights"] == "last epoch"
  assert card["training"]["exported_epoch"] == 2
  import hashlib
  for name, digest in card["files_sha256"].items():
    assert hashlib.sha256((out / "saved_model" / name).read_bytes()
                          ).hexdigest() == digest, name


def test_hub_keras_layer_path_trains_and_exports(small_imdb, tiny_encoder_dir,
                                                 tmp_path):
  """The path TF Hub handles take: hub.KerasLayer(trainable=True), float32."""
  card = train_and_export(
      data_path=small_imdb, encoder=str(tiny_encoder_dir), out=tmp_path / "hub",
      settings=TrainSettings(epochs=1, max_examples=80, **TINY),
      use_hub_layer=True, progress=lambda m: None, max_test_examples=20)
  assert card["precisions"] == ["float32"]
  assert card["metrics"]["test"]["count"] == 20


@pytest.mark.parametrize("args, message", [
    (["--seq-length", "1024"], "--seq-length"),
    (["--truncation", "middle"], "--truncation"),
    pytest.param(["--precision", "float16"], "float16 needs a GPU",
                 marks=pytest.mark.skipif(
                     bool(tf.config.list_physical_devices("GPU")),
                     reason="this host has a GPU: float16 is a valid choice "
                     "here")),
    (["--truncation", "head", "--head-tokens", "64"],
     "--head-tokens applies only"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_bad_training_options_are_usage_errors(args, message, small_imdb,
                                               tiny_encoder_dir, tmp_path):
  result = CliRunner().invoke(main, [
      "train", "--data", str(small_imdb), "--encoder", str(tiny_encoder_dir),
      "--out", str(tmp_path / "x"), *args])
  assert result.exit_code == 2, result.output
  assert message in result.output
  assert isinstance(result.exception, SystemExit)


def test_unreachable_hub_encoder_fails_fast_with_the_local_alternative(
    small_imdb, tmp_path, monkeypatch):
  """Catches: a hub handle that cannot be downloaded ending in a hang, a
  traceback or a half-made --out, instead of one line naming import-encoder.

  The handle is a TF Hub-style URL on 127.0.0.1, where nothing listens on
  the HTTPS port: the same failure on every machine, online or not, and no
  download from the real hub (tutorial names map to tfhub.dev handles, as
  test_import_encoder checks without the network). No hub cache may serve it.
  Skipped where something listens on 127.0.0.1:443.
  """
  import socket
  import time
  try:
    socket.create_connection(("127.0.0.1", 443), timeout=5).close()
  except OSError:
    pass  # nothing answers there: the handle is unreachable, as meant
  else:
    pytest.skip("something listens on 127.0.0.1:443 on this host, so a hub "
                "handle there is not unreachable")
  monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
  started = time.monotonic()
  result = CliRunner().invoke(main, [
      "train", "--data", str(small_imdb), "--encoder",
      "https://127.0.0.1/tensorflow/small_bert/bert_en_uncased_L-4_H-512_A-8/1",
      "--out", str(tmp_path / "x")])
  # The reachability check waits 5 s at most and a refused connection fails
  # at once: 60 s is room for a loaded host (TensorFlow is imported already),
  # far below a hang in TF Hub's own download retries.
  assert time.monotonic() - started < 60
  assert result.exit_code == 1, result.output
  assert isinstance(result.exception, SystemExit), result.exception
  message = result.output.strip()
  assert len(message.splitlines()) == 1, message
  assert "cannot reach 127.0.0.1" in message and "import-encoder" in message
  assert not (tmp_path / "x").exists()


def test_reload_check_refuses_a_model_that_scores_otherwise(tiny_model_dir,
                                                             imdb_dir, tmp_path):
  """Catches: a reload check that passes whatever the fresh process scores
  (the card is written only after it passes, so the card cannot show it),
  one that crashes instead of naming a SavedModel that does not load, a
  killed process reported without its cause, and a fresh process left
  running when no check was asked of it."""
  import shutil

  from train.export.serving import ReloadCheck, ReloadMismatch
  texts = pq.read_table(imdb_dir / "test.parquet").slice(0, 4)["text"].to_pylist()
  saved_model = tiny_model_dir / "saved_model"
  model = tf.saved_model.load(str(saved_model))
  in_memory = model.signatures["serving_default"](
      text=tf.constant(texts))["probability"].numpy()
  assert ReloadCheck().check(saved_model, texts, in_memory) <= 1e-6
  with pytest.raises(ReloadMismatch, match="differ"):
    ReloadCheck().check(saved_model, texts, in_memory + 1e-3)
  broken = tmp_path / "broken"
  shutil.copytree(saved_model, broken)
  (broken / "saved_model.pb").write_bytes(b"not a graph")
  with pytest.raises(ReloadMismatch, match="does not load"):
    ReloadCheck().check(broken, texts, in_memory)
  # Killed from outside (the OOM killer) while it waited: said as such.
  killed = ReloadCheck()
  killed._process.kill()
  with pytest.raises(ReloadMismatch, match="does not load.*killed by signal 9"):
    killed.check(saved_model, texts, in_memory)
  # Started ahead of an export that then fails: leaving the block ends it.
  with ReloadCheck() as never_asked:
    process = never_asked._process
  assert process.poll() is not None


def test_train_writes_no_card_when_a_fresh_process_cannot_load_the_model(
    small_imdb, tiny_encoder_dir, tmp_path, monkeypatch):
  """Catches: `train` writing model_card.json (or saved_model/) although the
  reload check failed, or the failure ending in a traceback.

  The fresh process that the reload check starts finds a tensorflow_text
  that does not import (shadowed on its PYTHONPATH), as on a worker that
  lacks it: the exported model really does not load there. This process
  imported the real one already, so training itself is unaffected.
  """
  shadow = tmp_path / "shadow" / "tensorflow_text"
  shadow.mkdir(parents=True)
  (shadow / "__init__.py").write_text(
      "raise ImportError('tensorflow_text is not installed on this worker')\n")
  monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
  out = tmp_path / "run"
  result = CliRunner().invoke(main, [
      "train", "--data", str(small_imdb), "--encoder", str(tiny_encoder_dir),
      "--out", str(out), "--epochs", "1", "--batch-size", "8",
      "--seq-length", "64", "--truncation", "head", "--pooling", "cls",
      "--precision", "float32", "--max-examples", "40",
      "--max-test-examples", "10", "--patience", "0"])
  assert result.exit_code == 1, result.output
  assert isinstance(result.exception, SystemExit), result.exception
  last = result.output.strip().splitlines()[-1]
  assert last.startswith("Error: the SavedModel does not load in a fresh "
                         "process"), last
  assert "tensorflow_text is not installed on this worker" in last
  assert (out / "train_state.json").exists()  # training itself ran
  assert not (out / "model_card.json").exists()
  assert not (out / "saved_model").exists()


def _classifier_weights(tiny_encoder_dir, checkpoint=None) -> dict:
  """name → value of a classifier's weights: the encoder's as imported, or
  those of a run's checkpoint."""
  from train.encoders.source import resolve_encoder
  from train.model.classifier import build_classifier
  model = build_classifier(resolve_encoder(str(tiny_encoder_dir)),
                           precision="float32", pooling="cls",
                           restore_encoder=checkpoint is None)
  if checkpoint is not None:
    tf.train.Checkpoint(model=model).read(str(checkpoint)).expect_partial()
  return {v.name: v.numpy() for v in model.weights}


def test_frozen_layers_keep_their_pretrained_weights(small_imdb,
                                                     tiny_encoder_dir, tmp_path):
  """Catches: --frozen-layers ignored (the lowest layers trained anyway), or
  freezing more than asked (the layers above left as imported)."""
  out = tmp_path / "frozen"
  card = train_and_export(
      data_path=small_imdb, encoder=str(tiny_encoder_dir), out=out,
      settings=TrainSettings(epochs=1, max_examples=80, frozen_layers=2,
                             learning_rate=1e-3, **TINY),
      progress=lambda m: None, max_test_examples=20)
  assert card["hyperparameters"]["frozen_layers"] == 2
  imported = _classifier_weights(tiny_encoder_dir)
  trained = _classifier_weights(
      tiny_encoder_dir, tf.train.latest_checkpoint(str(out / "checkpoints")))
  changed = {name for name in imported
             if not np.array_equal(imported[name], trained[name])}
  lowest = [name for name in imported
            if "embeddings" in name or "transformer_layer_0/" in name]
  assert len(lowest) >= 6 and not changed & set(lowest), sorted(changed)
  above = [name for name in imported if "transformer_layer_1/" in name]
  assert above and set(above) <= changed, sorted(set(above) - changed)


def test_no_gradient_is_computed_below_the_frozen_layers(tiny_encoder_dir,
                                                         tmp_path):
  """Catches: frozen variables merely left out of the update while the
  backward pass still runs through their layers (all the cost, none of the
  saving)."""
  from train.encoders.source import resolve_encoder
  from train.loops.trainer import TokenizedReviews, Trainer
  from train.model.classifier import build_classifier
  dummy = TokenizedReviews(np.zeros((1, 8), np.int32), np.array([8]),
                           np.array([0]))

  def gradient_ops(frozen_layers):
    model = build_classifier(resolve_encoder(str(tiny_encoder_dir)),
                             precision="float32", pooling="cls")
    trainer = Trainer(model, TrainSettings(epochs=1, frozen_layers=frozen_layers,
                                           **TINY), dummy, dummy,
                      tmp_path / f"run{frozen_layers}", run_identity={},
                      progress=lambda m: None)
    graph = trainer._train_step.get_concrete_function().graph
    names = [op.name for op in graph.get_operations()
             if op.name.startswith("gradient_tape/")]
    return {layer: sum(f"/{layer}/" in n for n in names)
            for layer in ("transformer_layer_0", "transformer_layer_1")}

  whole, frozen = gradient_ops(0), gradient_ops(2)
  assert whole["transformer_layer_0"] > 0 and whole["transformer_layer_1"] > 0
  assert frozen["transformer_layer_0"] == 0
  # Still differentiated for its weights, less the gradient of its input.
  assert 0 < frozen["transformer_layer_1"] < whole["transformer_layer_1"]


def test_more_frozen_layers_than_the_encoder_has_is_a_usage_error(
    small_imdb, tiny_encoder_dir, tmp_path):
  result = CliRunner().invoke(main, [
      "train", "--data", str(small_imdb), "--encoder", str(tiny_encoder_dir),
      "--out", str(tmp_path / "x"), "--frozen-layers", "4"])
  assert result.exit_code == 2, result.output
  assert ("--frozen-layers 4: this encoder has 3 layers (embeddings and 2 "
          "transformer blocks)") in result.output
  assert not (tmp_path / "x").exists()
