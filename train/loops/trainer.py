"""The fine-tuning loop: AdamW with warm-up, checkpoints, resume, early stopping.

A custom loop rather than `Model.fit` because a long run must resume in the
middle of an epoch and end with exactly the steps of an unbroken run: batch
order is a pure function of (seed, epoch), the step counter lives in the
optimizer, and the running epoch sums live in the checkpoint.
"""
import dataclasses
import math
import pathlib
import time
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from evaluation.metrics import log_loss_from_logits, softmax_log_loss
from train.model.classifier import (class_count, encoder_inputs,
                                    trained_variables)
from train.loops.checkpoints import RunCheckpoints
from train.loops.schedule import WarmupLinearDecay
from train.model.seeded_dropout import keyed_by
from train.settings import TrainSettings

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
STATE_FILE = "train_state.json"
# Weight decay is not applied to biases and layer-norm parameters (as in BERT).
_NO_DECAY = ["bias", "gamma", "beta"]


# Settings that do not change the arithmetic of the steps already taken, so
# a resumed run may use new values (e.g. give a finished run more patience).
_CHANGEABLE_ON_RESUME = ("patience", "checkpoint_every_steps")
# Settings added since runs were first made, with the behaviour of the runs
# made before them: a run without the key was made that way.
_BEFORE_THE_SETTING_EXISTED = {"keep_markup": True, "frozen_layers": 0}


def bert_optimizer(schedule, *, weight_decay: float, precision: str,
                   variables) -> tf_keras.optimizers.Optimizer:
  """AdamW as BERT is trained: no decay of biases and layer norms, global
  gradient clipping, loss scaling for float16."""
  optimizer = tf_keras.optimizers.AdamW(
      learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6,
      global_clipnorm=1.0)
  optimizer.exclude_from_weight_decay(var_names=_NO_DECAY)
  if precision == "float16":
    optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
  # Slots exist before any restore: a checkpoint written right after a
  # resume (before the first step) must still hold the Adam moments.
  (optimizer.inner_optimizer if hasattr(optimizer, "inner_optimizer")
   else optimizer).build(variables)
  return optimizer


class TrainingDiverged(Exception):
  """The loss stopped being finite; the last good checkpoint is kept."""


@dataclasses.dataclass
class TokenizedReviews:
  """Token ids at the model's sequence length, with the true lengths."""
  word_ids: np.ndarray  # int32 [n, seq_length], padded with 0
  lengths: np.ndarray  # int32 [n], including [CLS] and [SEP]
  labels: np.ndarray  # int32 [n]; float32 where targets are soft

  def __len__(self):
    return len(self.lengths)

  def __add__(self, other: "TokenizedReviews") -> "TokenizedReviews":
    labels = np.concatenate([self.labels, other.labels])
    return TokenizedReviews(np.concatenate([self.word_ids, other.word_ids]),
                            np.concatenate([self.lengths, other.lengths]),
                            labels)


def tokenize_reviews(packer, texts, labels, *, batch_size: int = 512
                     ) -> TokenizedReviews:
  pack = tf.function(packer.pack,
                     input_signature=[tf.TensorSpec([None], tf.string)])
  ids, lengths = [], []
  for start in range(0, len(texts), batch_size):
    packed = pack(tf.constant(texts[start:start + batch_size]))
    ids.append(packed["input_word_ids"].numpy())
    lengths.append(packed["input_mask"].numpy().sum(axis=1).astype(np.int32))
  labels = np.asarray(labels)
  return TokenizedReviews(np.concatenate(ids), np.concatenate(lengths),
                          labels if labels.dtype == np.float32 else
                          labels.astype(np.int32))


def epoch_batches(lengths: np.ndarray, *, batch_size: int, seed: int,
                  epoch: int, length_bucketing: bool) -> List[np.ndarray]:
  """The batches of one epoch, a pure function of (seed, epoch).

  With length bucketing, shuffled rows are sorted by length within windows of
  64 batches and the batches are shuffled again: batches stay random but
  their rows have similar lengths, so little compute goes to padding.
  """
  rng = np.random.default_rng([seed, epoch])
  order = rng.permutation(len(lengths))
  if length_bucketing:
    window = batch_size * 64
    order = np.concatenate([
        chunk[np.argsort(lengths[chunk], kind="stable")]
        for chunk in np.array_split(order, max(1, math.ceil(len(order) / window)))
    ])
  batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
  if length_bucketing:
    batches = [batches[i] for i in rng.permutation(len(batches))]
  return batches


def _batch_inputs(data: TokenizedReviews, rows: np.ndarray):
  length = int(data.lengths[rows].max())
  word_ids = data.word_ids[rows, :length]
  mask = (np.arange(length)[np.newaxis, :] < data.lengths[rows, np.newaxis])
  return word_ids, mask.astype(np.int32)


def format_seconds(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return (f"{hours}h{rest // 60:02d}m" if hours else
          f"{rest // 60}m{rest % 60:02d}s")


_TOKEN_SPECS = [tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None, None], tf.int32)]


def make_logits_fn(model):
  """A traced token-ids → logits function for evaluation (no retracing)."""
  @tf.function(input_signature=_TOKEN_SPECS)
  def logits_fn(word_ids, mask):
    return model(encoder_inputs(word_ids, mask), training=False)
  return logits_fn


PREDICT_PROGRESS_EVERY_S = 30.0


def predict_logits(logits_fn, data: TokenizedReviews, *, batch_size: int = 64,
                   progress: Optional[Callable[[str], None]] = None,
                   what: str = "scoring", every_s: Optional[float] = None
                   ) -> np.ndarray:
  """Logits in input order; rows are batched by length to cut padding.
  With `progress`, a line every `every_s` seconds (a test split of 25,000
  long reviews takes minutes)."""
  every_s = PREDICT_PROGRESS_EVERY_S if every_s is None else every_s
  order = np.argsort(data.lengths, kind="stable")
  logits = None  # [n] for two classes, [n, classes] for more
  start_time = last = time.monotonic()
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    word_ids, mask = _batch_inputs(data, rows)
    batch = np.asarray(logits_fn(word_ids, mask))
    if logits is None:
      logits = np.empty((len(data),) + batch.shape[1:], np.float32)
    logits[rows] = batch
    now = time.monotonic()
    done = start + len(rows)
    if progress is not None and now - last >= every_s and done < len(order):
      last = now
      # Shortest reviews first: the rate falls as they lengthen, so the
      # estimate is a lower bound.
      rate = done / max(now - start_time, 1e-9)
      progress(f"{what}: {done:,}/{len(order):,} reviews, {rate:.1f} reviews/s, "
               f"at least {format_seconds((len(order) - done) / rate)} to go")
  return logits


class Trainer:
  """Runs (or resumes) one fine-tuning run in `workdir`."""

  def __init__(self, model: tf_keras.Model, settings: TrainSettings,
               train_data: TokenizedReviews, validation_data: TokenizedReviews,
               workdir, *, run_identity: dict,
               progress: Callable[[str], None] = print,
               log_every_steps: int = 20, restore_best: bool = True,
               on_checkpoint: Optional[Callable[[], None]] = None):
    self.model = model
    self.settings = settings
    self.train_data = train_data
    self.validation_data = validation_data
    self.workdir = pathlib.Path(workdir)
    self.progress = progress
    self.log_every_steps = log_every_steps
    self.restore_best = restore_best
    self.steps_per_epoch = math.ceil(len(train_data) / settings.batch_size)
    self.total_steps = self.steps_per_epoch * settings.epochs
    schedule = WarmupLinearDecay(
        settings.learning_rate, self.total_steps,
        int(round(settings.warmup_fraction * self.total_steps)))
    self.schedule = schedule
    self.trained_variables = trained_variables(model, settings.frozen_layers)
    self.optimizer = bert_optimizer(
        schedule, weight_decay=settings.weight_decay,
        precision=settings.precision, variables=self.trained_variables)
    self.num_classes = class_count(model)
    self.loss_fn = (
        tf_keras.losses.BinaryCrossentropy(from_logits=True)
        if self.num_classes == 2 else
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Running sums of the current epoch, checkpointed so a resumed epoch
    # reports the same training loss as an unbroken one.
    self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    self.correct_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    self.seen = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    self.checkpoints = RunCheckpoints(
        tf.train.Checkpoint(model=model, optimizer=self.optimizer,
                            loss_sum=self.loss_sum,
                            correct_sum=self.correct_sum, seen=self.seen),
        self.workdir, folder=CHECKPOINT_DIR, state_file=STATE_FILE,
        settings=settings, identity=run_identity, what="a run",
        inputs="data", changeable_on_resume=_CHANGEABLE_ON_RESUME,
        defaults_before_they_existed=_BEFORE_THE_SETTING_EXISTED,
        on_saved=on_checkpoint)
    self.best_checkpoint = tf.train.Checkpoint(model=model)
    self.state = {"history": [], "best_val_loss": None, "best_epoch": None,
                  "epochs_without_improvement": 0, "finished": False,
                  "stopped_early": False}
    self._train_step = self._make_train_step()
    self._logits_fn = make_logits_fn(model)
    # Epoch → the validation logits its evaluation computed in this process:
    # after run(), the exported epoch's need not be computed again.
    self._validation_logits = {}

  # -- state ---------------------------------------------------------------
  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def _state(self) -> dict:
    return {"steps_per_epoch": self.steps_per_epoch, **self.state}

  def _save_checkpoint(self):
    self.checkpoints.save(self.step, self._state())

  def restore(self) -> bool:
    """Loads the latest checkpoint of a previous run; False if there is none."""
    saved = self.checkpoints.restore(self.state)
    if saved is None:
      return False
    self.state = saved
    self.progress(f"resumed from step {self.step} of {self.total_steps} "
                  f"({self.checkpoints.latest})")
    return True

  # -- steps ---------------------------------------------------------------
  def _make_train_step(self):
    model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
    scaled = isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    if self.num_classes == 2:
      def predicted_class(logits):
        return tf.cast(logits > 0, tf.float32)
    else:
      def predicted_class(logits):
        return tf.cast(tf.argmax(logits, axis=-1), tf.float32)

    seed = self.settings.seed
    trained = self.trained_variables

    @tf.function(input_signature=_TOKEN_SPECS + [tf.TensorSpec([None], tf.float32)])
    def train_step(word_ids, mask, labels):
      inputs = encoder_inputs(word_ids, mask)
      # Only the trained variables are watched, so that the backward pass
      # stops at the highest frozen layer.
      with tf.GradientTape(watch_accessed_variables=False) as tape, \
          keyed_by(seed, optimizer.iterations):
        tape.watch(trained)
        logits = model(inputs, training=True)
        loss = loss_fn(labels, logits)
        scaled_loss = optimizer.get_scaled_loss(loss) if scaled else loss
      grads = tape.gradient(scaled_loss, trained)
      if scaled:
        grads = optimizer.get_unscaled_gradients(grads)
      # Mean pooling leaves the encoder's pooler without gradients.
      optimizer.apply_gradients([
          (g, v) for g, v in zip(grads, trained, strict=True)
          if g is not None])
      count = tf.cast(tf.shape(labels)[0], tf.float64)
      # Rounded: soft (teacher probability) targets count as their class.
      correct = tf.reduce_sum(tf.cast(
          tf.equal(predicted_class(logits), tf.round(labels)), tf.float64))
      self.loss_sum.assign_add(tf.cast(loss, tf.float64) * count)
      self.correct_sum.assign_add(correct)
      self.seen.assign_add(count)
      return loss
    return train_step

  def logits(self, data: TokenizedReviews, what: str = "reviews") -> np.ndarray:
    """Logits for `data` (named `what` in progress lines) from the weights
    the model holds now (after run(), the exported epoch's), computed as the
    exported signatures compute them (the model on token ids,
    training=False)."""
    if data is self.validation_data and self.state["finished"]:
      known = self._validation_logits.get(self.exported_epoch)
      if known is not None:
        return known
    return predict_logits(self._logits_fn, data, progress=self.progress,
                          what=f"scoring {what}")

  def _metrics(self, data: TokenizedReviews, logits: np.ndarray) -> dict:
    if self.num_classes == 2:
      return {"loss": log_loss_from_logits(data.labels, logits),
              "accuracy": float(np.mean((logits > 0) == (data.labels == 1)))}
    return {"loss": softmax_log_loss(data.labels, logits),
            "accuracy": float(np.mean(logits.argmax(axis=1) == data.labels))}

  # -- loop ----------------------------------------------------------------
  def run(self) -> dict:
    s = self.settings
    start_time = time.monotonic()
    start_step = self.step
    while not self.state["finished"]:
      epoch, done_in_epoch = divmod(self.step, self.steps_per_epoch)
      if done_in_epoch == 0 and epoch > len(self.state["history"]):
        # Cut off after an epoch's last step but before its validation.
        self._end_epoch(epoch - 1, 0.0)
        continue
      if epoch >= s.epochs:
        self.state["finished"] = True
        break
      if done_in_epoch == 0:
        for v in (self.loss_sum, self.correct_sum, self.seen):
          v.assign(0.0)
      batches = epoch_batches(self.train_data.lengths, batch_size=s.batch_size,
                              seed=s.seed, epoch=epoch,
                              length_bucketing=s.length_bucketing)
      epoch_start = time.monotonic()
      for index in range(done_in_epoch, self.steps_per_epoch):
        rows = batches[index]
        word_ids, mask = _batch_inputs(self.train_data, rows)
        labels = self.train_data.labels[rows].astype(np.float32)
        loss = float(self._train_step(word_ids, mask, labels))
        if not math.isfinite(loss):
          raise TrainingDiverged(
              f"training loss is {loss} at step {self.step} (epoch {epoch + 1}); "
              f"stopped without saving. The last good checkpoint "
              f"({self.checkpoints.latest or 'none yet'}) is kept: lower "
              "--learning-rate or use --precision float32, then --resume")
        if self.step % s.checkpoint_every_steps == 0:
          self._save_checkpoint()
        if (index + 1) % self.log_every_steps == 0 or index + 1 == self.steps_per_epoch:
          self._log_step(epoch, index + 1, start_time, start_step)
      self._end_epoch(epoch, time.monotonic() - epoch_start)
    self._restore_best()
    self.checkpoints.save_state(self._state())
    return self.state

  def _log_step(self, epoch, index, start_time, start_step):
    elapsed = time.monotonic() - start_time
    rate = (self.step - start_step) / max(elapsed, 1e-9)
    left_epoch = (self.steps_per_epoch - index) / max(rate, 1e-9)
    left_run = (self.total_steps - self.step) / max(rate, 1e-9)
    seen = max(float(self.seen.numpy()), 1.0)
    self.progress(
        f"epoch {epoch + 1}/{self.settings.epochs} step {index}/{self.steps_per_epoch} "
        f"loss {self.loss_sum.numpy() / seen:.4f} "
        f"acc {self.correct_sum.numpy() / seen:.4f} "
        f"lr {float(self.schedule(self.step - 1)):.2e} "
        f"{rate * self.settings.batch_size:.1f} reviews/s "
        f"ETA epoch {format_seconds(left_epoch)} run {format_seconds(left_run)}")

  def _end_epoch(self, epoch: int, seconds: float):
    seen = max(float(self.seen.numpy()), 1.0)
    logits = predict_logits(self._logits_fn, self.validation_data,
                            progress=self.progress,
                            what=f"epoch {epoch + 1} validation")
    self._validation_logits[epoch + 1] = logits
    validation = self._metrics(self.validation_data, logits)
    record = {"epoch": epoch + 1, "loss": float(self.loss_sum.numpy() / seen),
              "accuracy": float(self.correct_sum.numpy() / seen),
              "val_loss": validation["loss"],
              "val_accuracy": validation["accuracy"],
              "learning_rate": float(self.schedule(self.step - 1)),
              "steps": self.step, "seconds": round(seconds, 1)}
    self.state["history"].append(record)
    self.progress(
        f"epoch {epoch + 1}/{self.settings.epochs} done in {format_seconds(seconds)}: "
        f"loss {record['loss']:.4f} acc {record['accuracy']:.4f} "
        f"val_loss {record['val_loss']:.4f} val_acc {record['val_accuracy']:.4f}")
    best = self.state["best_val_loss"]
    if best is None or validation["loss"] < best:
      self.state.update(best_val_loss=validation["loss"], best_epoch=epoch + 1,
                        epochs_without_improvement=0)
      self.best_checkpoint.write(str(self.workdir / BEST_DIR / "weights"))
    else:
      self.state["epochs_without_improvement"] += 1
      if (self.settings.patience and epoch + 1 < self.settings.epochs and
          self.state["epochs_without_improvement"] >= self.settings.patience):
        self.state.update(finished=True, stopped_early=True)
        self.progress(f"early stopping: validation loss has not improved for "
                      f"{self.settings.patience} epoch(s); best was epoch "
                      f"{self.state['best_epoch']}")
    if epoch + 1 >= self.settings.epochs:
      self.state["finished"] = True
    self._save_checkpoint()

  @property
  def exported_epoch(self) -> Optional[int]:
    """The epoch whose weights the model holds after run()."""
    if self.state["best_epoch"] is None or not self.restore_best:
      return len(self.state["history"]) or None
    return self.state["best_epoch"]

  def _restore_best(self):
    if self.state["best_epoch"] is None:
      return
    if not self.restore_best:
      # best_epoch stays the truth (the best/ checkpoint holds its weights).
      self.progress("keeping the weights of the last epoch (--keep-last)")
      return
    self.best_checkpoint.read(str(self.workdir / BEST_DIR / "weights")
                              ).assert_existing_objects_matched()
    if self.state["best_epoch"] != len(self.state["history"]):
      self.progress(f"restored the weights of epoch {self.state['best_epoch']} "
                    "(lowest validation loss)")
