"""Training faults: a diverging loss, and a run killed with SIGKILL."""
import json
import subprocess

import pytest

from tests.conftest import crash_test_command
from train.run import train_and_export
from train.loops.trainer import TrainingDiverged, TrainSettings


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    crash_test_reviews, tiny_encoder_dir, tmp_path):
  # A learning rate of 1e30 (no warm-up) overflows the weights in one step.
  settings = TrainSettings(batch_size=8, epochs=1, seq_length=32,
                           truncation="head", pooling="cls", precision="float32",
                           learning_rate=1e30, warmup_fraction=0.0,
                           checkpoint_every_steps=1)
  out = tmp_path / "diverged"
  with pytest.raises(TrainingDiverged,
                     match=r"(?i)(nan|inf).*--resume") as raised:
    train_and_export(data_path=crash_test_reviews, encoder=str(tiny_encoder_dir),
                     out=out, settings=settings, progress=lambda m: None)
  message = str(raised.value)
  state = json.loads((out / "train_state.json").read_text())
  assert not state["finished"]
  checkpoints = sorted((out / "checkpoints").glob("ckpt-*.index"))
  assert checkpoints, "the last good checkpoint must be kept"
  failing_step = int(message.split(" at step ")[1].split()[0])
  assert all(int(p.stem.split("-")[1]) < failing_step for p in checkpoints)
  assert not (out / "model_card.json").exists()
  assert not (out / "saved_model").exists()


def _latest_checkpoint_step(run_dir):
  """The step of the checkpoint that --resume would load, or None."""
  state = run_dir / "checkpoints" / "checkpoint"
  try:
    first = state.read_text().splitlines()[0]  # model_checkpoint_path: "ckpt-N"
  except (OSError, IndexError):
    return None
  return int(first.split("ckpt-")[1].rstrip('"'))


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_to_the_weights_of_an_unbroken_run(
    crash_test_reviews, tiny_encoder_dir, tmp_path, sigkill_when,
    assert_same_training_state, unbroken_crash_test_run):
  """`reviewscore train` SIGKILLed in the middle of epoch 2, then run again
  with --resume, ends with the steps, weights, optimizer state and metrics
  of the same command run unbroken (same --seed; float32; dropout on in the
  encoder and the head, its masks a function of seed and step).

  Catches: a resume from anything but the last checkpoint, one that loses
  the Adam moments or the step or replays other batches or other dropout
  masks, and a --seed that does not make the initial weights reproducible.
  """
  out = tmp_path / "killed"
  command = crash_test_command(crash_test_reviews, tiny_encoder_dir, out)
  steps_per_epoch = 12  # 96 training reviews (120 less the validation fifth)

  def mid_epoch_2_checkpoint():  # step 15 or 20 of 24
    step = _latest_checkpoint_step(out)
    return step is not None and steps_per_epoch < step < 2 * steps_per_epoch \
        and step % steps_per_epoch != 0
  assert sigkill_when(command, mid_epoch_2_checkpoint), (
      "no checkpoint in the middle of epoch 2 while the run ran")
  killed_at = _latest_checkpoint_step(out)
  assert not (out / "model_card.json").exists()
  resumed = subprocess.run(command + ["--resume"], capture_output=True,
                           text=True, timeout=300)
  errors = [l for l in resumed.stderr.splitlines() if "Error" in l or "error:" in l]
  assert resumed.returncode == 0, "\n".join(errors[-10:]) or resumed.stderr[-3000:]
  assert f"resumed from step {killed_at} of 24" in resumed.stderr
  card = json.loads((out / "model_card.json").read_text())
  assert card["training"]["steps"] == card["training"]["total_steps"] == 24
  assert card["training"]["epochs_run"] == 2

  reference = unbroken_crash_test_run
  expected = json.loads((reference / "model_card.json").read_text())
  assert expected["training"]["steps"] == 24
  assert card["data"] == expected["data"]
  assert_same_training_state(out, reference)
  for key in ("log_loss", "accuracy"):  # of the exported weights
    assert card["metrics"]["validation"][key] == pytest.approx(
        expected["metrics"]["validation"][key], rel=1e-5), key


def test_a_run_from_before_a_setting_existed_resumes_as_it_was_made(
    crash_test_reviews, tiny_encoder_dir, tmp_path):
  """A run started before --keep-markup/--drop-markup existed kept HTML line
  breaks: resumed with today's default (drop) it would export a model whose
  tokenizer differs from its training. Catches a resume that fills a setting
  missing from the saved run with today's default."""
  from train.loops.checkpoints import ResumeMismatch
  settings = TrainSettings(batch_size=8, epochs=1, seq_length=32,
                           truncation="head", pooling="cls",
                           precision="float32", checkpoint_every_steps=5)
  out = tmp_path / "older"

  class Cut(Exception):
    pass

  def cut(message):
    if message.startswith("epoch 1/1 step 10/"):
      raise Cut
  with pytest.raises(Cut):
    train_and_export(data_path=crash_test_reviews, encoder=str(tiny_encoder_dir),
                     out=out, settings=settings, progress=cut,
                     log_every_steps=10)
  state_path = out / "train_state.json"
  state = json.loads(state_path.read_text())
  del state["settings"]["keep_markup"]  # as written before the setting existed
  state_path.write_text(json.dumps(state))
  with pytest.raises(ResumeMismatch, match="keep_markup"):
    train_and_export(data_path=crash_test_reviews, encoder=str(tiny_encoder_dir),
                     out=out, settings=settings, resume=True,
                     progress=lambda m: None)
  import dataclasses
  card = train_and_export(
      data_path=crash_test_reviews, encoder=str(tiny_encoder_dir), out=out,
      settings=dataclasses.replace(settings, keep_markup=True), resume=True,
      progress=lambda m: None)
  assert card["truncation"]["markup"] == "kept"
