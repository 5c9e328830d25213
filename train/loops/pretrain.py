"""Domain-adaptive pre-training: masked-language-model training of an
imported encoder, continued on unlabelled text of the task's domain.

Sun et al. (2019) measured about a point of IMDB accuracy from it for
BERT-base; Gururangan et al. (2020, "Don't Stop Pretraining") across many
domains. The result is an encoder directory in the format `import-encoder`
writes (encoder/, preprocessor/, encoder_info.json), so `train --encoder`
takes it unchanged; its encoder_info.json records the source encoder, the
texts and the settings.

The examples are chunks of each text with whole words masked
(`train.data.masking`). The batch order and the masks are pure functions of
(seed, step), so a resumed run takes the same steps as an unbroken one.
"""
import dataclasses
import datetime
import math
import pathlib
import shutil
import time
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from runtime.hardware import choose_precision
from train.model.bert_backbone import BertBackbone, dummy_inputs
from train.model.bert_config import BertConfig
from train.model.classifier import PRECISIONS, encoder_inputs, restore_backbone
from train.data.texts import UnlabelledTexts
from train.encoders.source import EncoderSource, resolve_encoder
from runtime.filesystems import replace_dir
from train.export.serving import write_json
from train.encoders.importer import (ENCODER_DIR, FORMAT_VERSION, INFO_FILE,
                                  PREPROCESSOR_DIR, PRETRAIN_STATE_FILE,
                                  save_hub_encoder)
from train.loops.checkpoints import RunCheckpoints
from train.loops.schedule import WarmupLinearDecay
from train.model.seeded_dropout import keyed_by
from train.settings import PretrainSettings
from train.data.masking import Chunks, MaskedBatch, chunk_texts, mask_whole_words
from train.model.masked_lm import MaskedLanguageModel
from train.loops.trainer import (TrainingDiverged, bert_optimizer,
                           epoch_batches, format_seconds)

CHECKPOINT_DIR = "pretrain_checkpoints"
CURVES_FILE = "pretraining_curves.png"
MASK_TOKEN = "[MASK]"
_VALIDATION_STREAM = 2**31 - 1  # the masks of held-out chunks: fixed


class PretrainError(Exception):
  """Pre-training cannot start: an encoder it cannot extend, too little text."""


def _special_id(preprocessor, token: str) -> int:
  """A token's id in a preprocessor's vocabulary (ours or TF Hub's)."""
  table = getattr(preprocessor, "vocab_table", None)
  if table is None:
    raise PretrainError("the preprocessor exposes no vocabulary table")
  found = tf.raw_ops.LookupTableFindV2(
      table_handle=table.resource_handle, keys=tf.constant([token]),
      default_value=tf.constant(-1, tf.int64))
  token_id = int(found.numpy()[0])
  if token_id < 0:
    raise PretrainError(f"the preprocessor's vocabulary has no {token}")
  return token_id


def _masked_loss(targets, logits, weights):
  losses = tf_keras.losses.sparse_categorical_crossentropy(
      targets, logits, from_logits=True)
  correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                             targets), tf.float32)
  count = tf.reduce_sum(weights)
  return (tf.reduce_sum(losses * weights) / tf.maximum(count, 1.0),
          tf.reduce_sum(correct * weights), count)


_BATCH_SPECS = [tf.TensorSpec([None, None], tf.int32)] * 4 + [
    tf.TensorSpec([None, None], tf.float32)]


class Pretrainer:
  """Runs (or resumes) one pre-training run in `workdir`."""

  def __init__(self, model: MaskedLanguageModel, settings: PretrainSettings,
               train_chunks: Chunks, validation_chunks: Chunks, workdir, *,
               mask_id: int, run_identity: dict,
               progress: Callable[[str], None] = print,
               log_every_steps: int = 20,
               on_checkpoint: Optional[Callable[[], None]] = None):
    self.model = model
    self.settings = settings
    self.train_chunks = train_chunks
    self.workdir = pathlib.Path(workdir)
    self.progress = progress
    self.log_every_steps = log_every_steps
    self.mask_id = mask_id
    self.max_predictions = max(1, math.ceil(settings.seq_length *
                                            settings.mask_fraction))
    self.steps_per_epoch = math.ceil(len(train_chunks) / settings.batch_size)
    self.schedule = WarmupLinearDecay(
        settings.learning_rate, settings.steps,
        int(round(settings.warmup_fraction * settings.steps)))
    head = model.head_variables()
    head_ids = {id(v) for v in head}
    self.head_optimizer = None
    if settings.head_learning_rate_multiplier != 1.0:
      # The prediction head starts from scratch on a trained encoder: a
      # higher rate of its own lets it catch up before its gradients have
      # pushed the encoder far (the encoder keeps --learning-rate).
      self.head_optimizer = bert_optimizer(
          WarmupLinearDecay(
              settings.learning_rate * settings.head_learning_rate_multiplier,
              settings.steps, self.schedule.warmup_steps),
          weight_decay=settings.weight_decay, precision=settings.precision,
          variables=head)
    self._shared = [v for v in model.trainable_variables
                    if self.head_optimizer is None or id(v) not in head_ids]
    self.optimizer = bert_optimizer(
        self.schedule, weight_decay=settings.weight_decay,
        precision=settings.precision, variables=self._shared)
    # Sums since the last log line, checkpointed with the weights.
    self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    self.correct_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    self.predicted = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    extra = ({"head_optimizer": self.head_optimizer}
             if self.head_optimizer is not None else {})
    self.checkpoints = RunCheckpoints(
        tf.train.Checkpoint(model=model, optimizer=self.optimizer,
                            loss_sum=self.loss_sum,
                            correct_sum=self.correct_sum,
                            predicted=self.predicted, **extra),
        self.workdir, folder=CHECKPOINT_DIR, state_file=PRETRAIN_STATE_FILE,
        settings=settings, identity=run_identity, what="a pre-training run",
        inputs="texts", changeable_on_resume=("checkpoint_every_steps",),
        on_saved=on_checkpoint)
    self.validation_batches = self._fixed_batches(validation_chunks)
    self.state = {"history": [], "finished": False}
    self._train_step, self._eval_step = self._make_steps()

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def _batch(self, chunks: Chunks, rows, rng) -> MaskedBatch:
    return mask_whole_words(
        chunks, rows, rng=rng, mask_fraction=self.settings.mask_fraction,
        max_predictions=self.max_predictions, mask_id=self.mask_id,
        vocab_size=self.model.backbone.config.vocab_size)

  def _fixed_batches(self, chunks: Chunks) -> List[MaskedBatch]:
    rng = np.random.default_rng([self.settings.seed, _VALIDATION_STREAM])
    order = np.argsort(chunks.lengths, kind="stable")
    size = self.settings.batch_size
    return [self._batch(chunks, order[i:i + size], rng)
            for i in range(0, len(order), size)]

  def _make_steps(self):
    model, optimizer, head_optimizer = (self.model, self.optimizer,
                                        self.head_optimizer)
    shared = self._shared
    head = [] if head_optimizer is None else model.head_variables()
    scaled = isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer)

    seed = self.settings.seed

    @tf.function(input_signature=_BATCH_SPECS)
    def train_step(word_ids, mask, positions, targets, weights):
      with tf.GradientTape() as tape, keyed_by(seed, optimizer.iterations):
        logits = model(encoder_inputs(word_ids, mask), positions, training=True)
        loss, correct, count = _masked_loss(targets, logits, weights)
        scaled_loss = optimizer.get_scaled_loss(loss) if scaled else loss
      grads = tape.gradient(scaled_loss, shared + head)
      if scaled:
        grads = optimizer.get_unscaled_gradients(grads)
      # The pooler is not on the path to the predictions.
      optimizer.apply_gradients([
          (g, v) for g, v in zip(grads[:len(shared)], shared, strict=True)
          if g is not None])
      if head:
        head_optimizer.apply_gradients(
            list(zip(grads[len(shared):], head, strict=True)))
      self.loss_sum.assign_add(tf.cast(loss * count, tf.float64))
      self.correct_sum.assign_add(tf.cast(correct, tf.float64))
      self.predicted.assign_add(tf.cast(count, tf.float64))
      return loss

    @tf.function(input_signature=_BATCH_SPECS)
    def eval_step(word_ids, mask, positions, targets, weights):
      logits = model(encoder_inputs(word_ids, mask), positions, training=False)
      loss, correct, count = _masked_loss(targets, logits, weights)
      return loss * count, correct, count
    return train_step, eval_step

  def evaluate(self) -> dict:
    """Masked-wordpiece loss and accuracy on the held-out chunks."""
    totals = np.zeros(3)
    for b in self.validation_batches:
      totals += [float(x) for x in self._eval_step(
          b.word_ids, b.mask, b.positions, b.targets, b.weights)]
    return {"val_loss": totals[0] / max(totals[2], 1),
            "val_accuracy": totals[1] / max(totals[2], 1)}

  # -- state ---------------------------------------------------------------
  def _save_checkpoint(self):
    self.checkpoints.save(self.step, self.state)

  def restore(self) -> bool:
    saved = self.checkpoints.restore(self.state)
    if saved is None:
      return False
    self.state = saved
    self.progress(f"resumed from step {self.step} of {self.settings.steps}")
    return True

  # -- loop ----------------------------------------------------------------
  def run(self) -> dict:
    s = self.settings
    if self.step == 0 and not self.state["history"]:
      self.state["history"].append({"step": 0, **self.evaluate()})
      self.progress(f"held-out masked-wordpiece loss before training "
                    f"{self.state['history'][0]['val_loss']:.4f}")
    started, first_step = time.monotonic(), self.step
    batches, batches_epoch = None, None
    while self.step < s.steps:
      epoch, index = divmod(self.step, self.steps_per_epoch)
      if batches_epoch != epoch:
        batches = epoch_batches(self.train_chunks.lengths,
                                batch_size=s.batch_size, seed=s.seed,
                                epoch=epoch, length_bucketing=True)
        batches_epoch = epoch
      step = self.step
      b = self._batch(self.train_chunks, batches[index],
                      np.random.default_rng([s.seed, step]))
      loss = float(self._train_step(b.word_ids, b.mask, b.positions,
                                    b.targets, b.weights))
      if not math.isfinite(loss):
        raise TrainingDiverged(
            f"masked-LM loss is {loss} at step {self.step}; the last good "
            f"checkpoint ({self.checkpoints.latest or 'none yet'}) is "
            "kept: lower --learning-rate, then --resume")
      if self.step % self.log_every_steps == 0 or self.step == s.steps:
        self._log(started, first_step)
      if self.step % s.checkpoint_every_steps == 0 or self.step == s.steps:
        self._record()
        self._save_checkpoint()
    self.state["finished"] = True
    self._save_checkpoint()
    return self.state

  def _log(self, started, first_step):
    rate = (self.step - first_step) / max(time.monotonic() - started, 1e-9)
    predicted = max(float(self.predicted.numpy()), 1.0)
    self.progress(
        f"step {self.step}/{self.settings.steps} "
        f"loss {self.loss_sum.numpy() / predicted:.4f} "
        f"acc {self.correct_sum.numpy() / predicted:.4f} "
        f"lr {float(self.schedule(self.step - 1)):.2e} "
        f"{rate * self.settings.batch_size:.1f} chunks/s "
        f"ETA {format_seconds((self.settings.steps - self.step) / max(rate, 1e-9))}")

  def _record(self):
    predicted = max(float(self.predicted.numpy()), 1.0)
    record = {"step": self.step,
              "loss": float(self.loss_sum.numpy() / predicted),
              "accuracy": float(self.correct_sum.numpy() / predicted),
              "learning_rate": float(self.schedule(self.step - 1)),
              **self.evaluate()}
    for v in (self.loss_sum, self.correct_sum, self.predicted):
      v.assign(0.0)
    self.state["history"].append(record)
    self.progress(f"step {self.step}: held-out loss {record['val_loss']:.4f} "
                  f"accuracy {record['val_accuracy']:.4f}")


def _local_source(encoder: str) -> EncoderSource:
  source = resolve_encoder(encoder)
  if not source.is_local or not source.local_info.get("bert_config"):
    raise PretrainError(
        f"{encoder}: pre-training extends encoders imported with `reviewscore "
        "import-encoder` (or written by `pretrain`), whose architecture is "
        "known; import the checkpoint first")
  return source


def _split_chunks(chunks: Chunks, count: int, seed: int):
  if len(chunks) < 2 * max(count, 1):
    raise PretrainError(f"{len(chunks)} chunks of text are too few to hold "
                        f"{count} out for validation")
  order = np.random.default_rng(seed).permutation(len(chunks))
  return (chunks.subset(np.sort(order[count:])),
          chunks.subset(np.sort(order[:count])))


def _export(backbone: BertBackbone, source: EncoderSource, out: pathlib.Path,
            info: dict) -> None:
  """encoder/ (float32 weights), preprocessor/ (the source's), then
  encoder_info.json last: a directory with it is a finished encoder."""
  exported = BertBackbone(backbone.config, name="bert_encoder")
  exported(dummy_inputs())
  exported.set_weights(backbone.get_weights())
  for name in (ENCODER_DIR, PREPROCESSOR_DIR):
    staging = out / (name + ".partial")
    if staging.exists():
      shutil.rmtree(staging)
    if name == ENCODER_DIR:
      save_hub_encoder(exported, staging)
    else:
      shutil.copytree(source.preprocessor, staging)
    replace_dir(staging, out / name)
  write_json(out / INFO_FILE, info)


def pretrain(*, texts: UnlabelledTexts, encoder: str, out,
             settings: PretrainSettings, resume: bool = False,
             progress: Callable[[str], None] = print,
             log_every_steps: int = 20,
             on_checkpoint: Optional[Callable[[], None]] = None) -> dict:
  """Continues MLM training of `encoder` on `texts`; writes an encoder
  directory to `out` and returns its encoder_info."""
  out = pathlib.Path(out)
  source = _local_source(encoder)
  if (out / PRETRAIN_STATE_FILE).exists() and not resume:
    raise PretrainError(f"{out} already holds a pre-training run: pass "
                        "--resume to continue it or choose another OUT")
  if (out / INFO_FILE).exists():
    raise PretrainError(f"{out} is a finished encoder directory; choose "
                        "another OUT")
  precision, why = choose_precision(
      settings.precision,
      has_gpu=bool(tf.config.list_physical_devices("GPU")))
  settings = dataclasses.replace(settings, precision=precision)
  progress(f"settings: precision {precision} ({why})")
  if settings.max_texts and settings.max_texts < len(texts):
    keep = np.sort(np.random.default_rng(settings.seed).permutation(
        len(texts))[:settings.max_texts])
    texts = UnlabelledTexts([texts.texts[i] for i in keep], texts.sources)
  out.mkdir(parents=True, exist_ok=True)

  preprocessor = hub.load(source.preprocessor)
  ids = {token: _special_id(preprocessor, token)
         for token in ("[CLS]", "[SEP]", MASK_TOKEN)}
  chunks = chunk_texts(preprocessor, texts.texts, seq_length=settings.seq_length,
                       cls_id=ids["[CLS]"], sep_id=ids["[SEP]"],
                       keep_markup=settings.keep_markup, progress=progress)
  train_chunks, validation_chunks = _split_chunks(
      chunks, settings.validation_chunks, settings.seed)
  progress(f"data: {len(texts):,} texts → {len(chunks):,} chunks of up to "
           f"{settings.seq_length} wordpieces ({len(validation_chunks):,} held "
           f"out); {len(train_chunks) / settings.batch_size:,.0f} steps make "
           f"an epoch, the run takes {settings.steps:,}")

  tf_keras.utils.set_random_seed(settings.seed)
  config = BertConfig.from_dict(source.local_info["bert_config"])
  backbone = BertBackbone(config, name="encoder",
                          dtype=tf_keras.mixed_precision.Policy(
                              PRECISIONS[settings.precision]))
  model = MaskedLanguageModel(backbone, name="masked_language_model")
  probe = chunks.subset(np.arange(1))
  model(encoder_inputs(probe.word_ids, (probe.word_ids > 0).astype(np.int32)),
        np.zeros([1, 1], np.int32))
  restore_backbone(backbone, source.encoder)
  identity = {"encoder": source.provenance(), "texts_sha256": texts.fingerprint(),
              "texts": len(texts)}
  trainer = Pretrainer(model, settings, train_chunks, validation_chunks, out,
                       mask_id=ids[MASK_TOKEN], run_identity=identity,
                       progress=progress, log_every_steps=log_every_steps,
                       on_checkpoint=on_checkpoint)
  if resume and not trainer.restore():
    progress(f"nothing to resume in {out}: starting a new run")
  started = time.monotonic()
  state = trainer.run()

  from evaluation import plots
  plots.pretraining_curves(state["history"], out / CURVES_FILE)
  info = {
      "format_version": FORMAT_VERSION,
      # What the weights started from, kept so that what the encoder is
      # (e.g. a mean-pooled sentence encoder) still reads the same.
      "checkpoint": source.local_info.get("checkpoint"),
      "bert_config": config.to_dict(),
      "preprocessor": source.local_info.get("preprocessor"),
      "pretraining": {
          "from_encoder": source.provenance(),
          "texts": {"sources": texts.sources, "rows": len(texts),
                    "sha256": texts.fingerprint(), "chunks": len(chunks),
                    "held_out_chunks": len(validation_chunks)},
          "settings": settings.to_dict(),
          "steps": trainer.step,
          "held_out_before": state["history"][0],
          "held_out_after": state["history"][-1],
          "seconds_this_session": round(time.monotonic() - started, 1),
      },
      "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "tensorflow": tf.__version__,
  }
  _export(backbone, source, out, info)
  shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
  return info

