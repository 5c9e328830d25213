"""Training faults: a diverging loss, and a run killed with SIGKILL."""
import json
import subprocess
import sys

import pytest

from train.run import train_and_export
from train.trainer import TrainingDiverged, TrainSettings


@pytest.fixture(scope="module")
def labelled_parquet(imdb_dir, tmp_path_factory):
  import numpy as np
  import pyarrow.parquet as pq
  table = pq.read_table(imdb_dir / "train.parquet",
                        columns=["review_id", "text", "label"])
  labels = table["label"].to_numpy()
  rows = np.concatenate([np.flatnonzero(labels == c)[:60] for c in (0, 1)])
  path = tmp_path_factory.mktemp("faults") / "reviews.parquet"
  pq.write_table(table.take(np.sort(rows)), path)
  return path


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    labelled_parquet, tiny_encoder_dir, tmp_path):
  # A learning rate of 1e30 (no warm-up) overflows the weights in one step.
  settings = TrainSettings(batch_size=8, epochs=1, seq_length=32,
                           truncation="head", pooling="cls", precision="float32",
                           learning_rate=1e30, warmup_fraction=0.0,
                           checkpoint_every_steps=1)
  out = tmp_path / "diverged"
  with pytest.raises(TrainingDiverged) as raised:
    train_and_export(data_path=labelled_parquet, encoder=str(tiny_encoder_dir),
                     out=out, settings=settings, progress=lambda m: None)
  message = str(raised.value)
  assert "nan" in message.lower() or "inf" in message.lower()
  assert "--resume" in message
  state = json.loads((out / "train_state.json").read_text())
  assert not state["finished"]
  checkpoints = sorted((out / "checkpoints").glob("ckpt-*.index"))
  assert checkpoints, "the last good checkpoint must be kept"
  failing_step = int(message.split(" at step ")[1].split()[0])
  assert all(int(p.stem.split("-")[1]) < failing_step for p in checkpoints)
  assert not (out / "model_card.json").exists()
  assert not (out / "saved_model").exists()


def test_run_killed_midway_resumes_to_the_full_step_count(
    labelled_parquet, tiny_encoder_dir, tmp_path, sigkill_when):
  out = tmp_path / "killed"
  command = [sys.executable, "-m", "reviewscore.cli", "train",
             "--data", str(labelled_parquet), "--encoder", str(tiny_encoder_dir),
             "--out", str(out), "--epochs", "2", "--batch-size", "8",
             "--seq-length", "32", "--checkpoint-every", "3", "--patience", "0",
             "--truncation", "head", "--pooling", "cls", "--precision", "float32"]

  def mid_run_checkpoint():  # past step 6 of 24
    steps = [int(p.stem.split("-")[1])
             for p in (out / "checkpoints").glob("ckpt-*.index")]
    return bool(steps) and max(steps) >= 6
  sigkill_when(command, mid_run_checkpoint)
  assert not (out / "model_card.json").exists()
  resumed = subprocess.run(command + ["--resume"], capture_output=True,
                           text=True, timeout=300)
  errors = [l for l in resumed.stderr.splitlines() if "Error" in l or "error:" in l]
  assert resumed.returncode == 0, "\n".join(errors[-10:]) or resumed.stderr[-3000:]
  assert "resumed from step" in resumed.stderr
  card = json.loads((out / "model_card.json").read_text())
  assert card["training"]["steps"] == card["training"]["total_steps"] == 24
  assert card["training"]["epochs_run"] == 2
