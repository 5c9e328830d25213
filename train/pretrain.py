"""Domain-adaptive pre-training: masked-language-model training of an
imported encoder, continued on unlabelled text of the task's domain.

Sun et al. (2019) measured about a point of IMDB accuracy from it for
BERT-base; Gururangan et al. (2020, "Don't Stop Pretraining") across many
domains. The result is an encoder directory in the format `import-encoder`
writes (encoder/, preprocessor/, encoder_info.json), so `train --encoder`
takes it unchanged; its encoder_info.json records the source encoder, the
texts and the settings.

Each text's wordpieces are cut into consecutive chunks of seq_length - 2
(never across texts) between [CLS] and [SEP]. Whole words are masked: a word
split into wordpieces is predicted whole or not at all. The batch order and
the masks are pure functions of (seed, step), so a resumed run takes the same
steps as an unbroken one.
"""
import dataclasses
import datetime
import json
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
from train.bert_backbone import BertBackbone, LayerNorm, dummy_inputs
from train.bert_config import BertConfig
from train.classifier import PRECISIONS, encoder_inputs, restore_backbone
from train.data import UnlabelledTexts
from train.encoders import EncoderSource, resolve_encoder
from train.export import replace_dir, write_json
from train.import_encoder import (ENCODER_DIR, FORMAT_VERSION, INFO_FILE,
                                  PREPROCESSOR_DIR, PRETRAIN_STATE_FILE,
                                  save_hub_encoder)
from train.review_packer import clean_markup
from train.schedule import WarmupLinearDecay
from train.seeded_dropout import keyed_by
from train.settings import PretrainSettings
from train.trainer import (ResumeMismatch, TrainingDiverged, bert_optimizer,
                           epoch_batches, format_seconds)

CHECKPOINT_DIR = "pretrain_checkpoints"
CURVES_FILE = "pretraining_curves.png"
MASK_TOKEN = "[MASK]"
# Of the wordpieces chosen for prediction: this share becomes [MASK], as
# many again a random wordpiece, the rest stay as they are (BERT's recipe:
# the model cannot tell which unmasked wordpieces it will be asked about).
_MASKED_SHARE, _RANDOM_SHARE = 0.8, 0.1
_VALIDATION_STREAM = 2**31 - 1  # the masks of held-out chunks: fixed


class PretrainError(Exception):
  """Pre-training cannot start: an encoder it cannot extend, too little text."""


@dataclasses.dataclass
class Chunks:
  """Wordpiece chunks of texts, padded to seq_length."""
  word_ids: np.ndarray  # int32 [n, seq_length]
  word_starts: np.ndarray  # bool [n, seq_length]: the wordpiece begins a word
  lengths: np.ndarray  # int32 [n], with [CLS] and [SEP]

  def __len__(self):
    return len(self.lengths)

  def subset(self, rows: np.ndarray) -> "Chunks":
    return Chunks(self.word_ids[rows], self.word_starts[rows], self.lengths[rows])


def _chunk_batch(words: tf.RaggedTensor, *, budget: int, cls_id: int,
                 sep_id: int, seq_length: int) -> Chunks:
  """[texts, words, wordpieces] → chunks of at most `budget` wordpieces."""
  pieces = words.flat_values.numpy().astype(np.int32)
  words_per_text, pieces_per_word = (r.numpy() for r in words.nested_row_lengths())
  word_text = np.repeat(np.arange(len(words_per_text)), words_per_text)
  pieces_per_text = np.bincount(word_text, weights=pieces_per_word,
                                minlength=len(words_per_text)).astype(np.int64)
  starts = np.zeros(len(pieces), bool)
  starts[np.cumsum(pieces_per_word)[:-1]] = True
  if len(pieces):
    starts[0] = True
  text_of_piece = np.repeat(np.arange(len(pieces_per_text)), pieces_per_text)
  text_offset = np.cumsum(pieces_per_text) - pieces_per_text
  position = np.arange(len(pieces)) - text_offset[text_of_piece]
  blocks_per_text = -(-pieces_per_text // budget)
  block_base = np.cumsum(blocks_per_text) - blocks_per_text
  block = block_base[text_of_piece] + position // budget
  column = 1 + position % budget
  n = int(blocks_per_text.sum())
  word_ids = np.zeros([n, seq_length], np.int32)
  word_starts = np.zeros([n, seq_length], bool)
  word_ids[block, column] = pieces
  word_starts[block, column] = starts
  word_starts[:, 1] = True  # a chunk that begins inside a word
  lengths = (np.bincount(block, minlength=n) + 2).astype(np.int32)
  word_ids[:, 0] = cls_id
  word_ids[np.arange(n), lengths - 1] = sep_id
  return Chunks(word_ids, word_starts, lengths)


def chunk_texts(preprocessor, texts: List[str], *, seq_length: int,
                cls_id: int, sep_id: int, keep_markup: bool = False,
                batch_size: int = 256,
                progress: Callable[[str], None] = print) -> Chunks:
  """`keep_markup`: as `train --keep-markup`; by default HTML line breaks
  are dropped, as training and scoring drop them."""
  parts = []
  started = time.monotonic()
  for start in range(0, len(texts), batch_size):
    strings = tf.constant(texts[start:start + batch_size])
    words = preprocessor.tokenize(strings if keep_markup else clean_markup(strings))
    parts.append(_chunk_batch(words, budget=seq_length - 2, cls_id=cls_id,
                              sep_id=sep_id, seq_length=seq_length))
    done = min(start + batch_size, len(texts))
    if done == len(texts) or (start // batch_size) % 50 == 49:
      progress(f"tokenized {done:,}/{len(texts):,} texts "
               f"({time.monotonic() - started:.0f} s)")
  return Chunks(np.concatenate([p.word_ids for p in parts]),
                np.concatenate([p.word_starts for p in parts]),
                np.concatenate([p.lengths for p in parts]))


@dataclasses.dataclass
class MaskedBatch:
  word_ids: np.ndarray  # int32 [batch, length]: with masks applied
  mask: np.ndarray  # int32 [batch, length]: 1 for real wordpieces
  positions: np.ndarray  # int32 [batch, predictions]
  targets: np.ndarray  # int32 [batch, predictions]: the original wordpieces
  weights: np.ndarray  # float32 [batch, predictions]: 0 for padding


def mask_whole_words(chunks: Chunks, rows: np.ndarray, *,
                     rng: np.random.Generator, mask_fraction: float,
                     max_predictions: int, mask_id: int, vocab_size: int
                     ) -> MaskedBatch:
  """A batch with about `mask_fraction` of each chunk's wordpieces chosen,
  whole words at a time (a word that would overshoot is skipped)."""
  length = int(chunks.lengths[rows].max())
  word_ids = chunks.word_ids[rows, :length].copy()
  mask = (np.arange(length)[np.newaxis, :] <
          chunks.lengths[rows, np.newaxis]).astype(np.int32)
  positions = np.zeros([len(rows), max_predictions], np.int32)
  weights = np.zeros([len(rows), max_predictions], np.float32)
  for i, row in enumerate(rows):
    content = int(chunks.lengths[row]) - 2
    starts = np.flatnonzero(chunks.word_starts[row, 1:content + 1]) + 1
    ends = np.append(starts[1:], content + 1)
    target = min(max_predictions, max(1, round(content * mask_fraction)))
    chosen: List[int] = []
    for word in rng.permutation(len(starts)):
      if len(chosen) + ends[word] - starts[word] <= target:
        chosen.extend(range(starts[word], ends[word]))
        if len(chosen) == target:
          break
    chosen.sort()
    positions[i, :len(chosen)] = chosen
    weights[i, :len(chosen)] = 1.0
  targets = np.take_along_axis(word_ids, positions, axis=1) * (weights > 0)
  chosen_rows, chosen_cols = np.nonzero(weights)
  draw = rng.random(len(chosen_rows))
  at = (chosen_rows, positions[chosen_rows, chosen_cols])
  masked = draw < _MASKED_SHARE
  randomized = (draw >= _MASKED_SHARE) & (draw < _MASKED_SHARE + _RANDOM_SHARE)
  word_ids[at[0][masked], at[1][masked]] = mask_id
  word_ids[at[0][randomized], at[1][randomized]] = rng.integers(
      0, vocab_size, int(randomized.sum()))
  return MaskedBatch(word_ids, mask, positions, targets.astype(np.int32),
                     weights)


class MaskedLanguageModel(tf_keras.Model):
  """Backbone → wordpieces at chosen positions → vocabulary logits.

  BERT's prediction head: dense + GELU + layer norm, then the word embedding
  matrix (tied) and a bias per wordpiece. Checkpoints such as
  all-MiniLM-L6-v2 ship without a head, so it starts from scratch.
  """

  def __init__(self, backbone: BertBackbone, **kwargs):
    super().__init__(**kwargs)
    config = backbone.config
    self.backbone = backbone
    self.transform = tf_keras.layers.Dense(
        config.hidden_size, activation="gelu", name="mlm_transform",
        kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02),
        dtype=backbone.dtype_policy)
    self.transform_norm = LayerNorm(config.layer_norm_eps, name="mlm_layer_norm",
                                    dtype=backbone.dtype_policy)
    self.output_bias = self.add_weight(
        "mlm_output_bias", [config.vocab_size], initializer="zeros")

  def head_variables(self):
    """The prediction head's own variables (not the tied embeddings)."""
    return (self.transform.trainable_variables +
            self.transform_norm.trainable_variables + [self.output_bias])

  def call(self, inputs, positions, training=False):
    sequence = self.backbone(inputs, training=training)["sequence_output"]
    chosen = tf.gather(sequence, positions, batch_dims=1)
    hidden = self.transform_norm(self.transform(chosen))
    logits = tf.matmul(hidden, tf.cast(self.backbone.word_embeddings,
                                       hidden.dtype), transpose_b=True)
    return tf.cast(logits, tf.float32) + self.output_bias


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
    self.run_identity = run_identity
    self.progress = progress
    self.on_checkpoint = on_checkpoint or (lambda: None)
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
    self.checkpoint = tf.train.Checkpoint(
        model=model, optimizer=self.optimizer, loss_sum=self.loss_sum,
        correct_sum=self.correct_sum, predicted=self.predicted, **extra)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, str(self.workdir / CHECKPOINT_DIR), max_to_keep=2)
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
  def _state_path(self) -> pathlib.Path:
    return self.workdir / PRETRAIN_STATE_FILE

  def _save_checkpoint(self):
    self.manager.save(checkpoint_number=self.step)
    write_json(self._state_path(), {"settings": self.settings.to_dict(),
                                    "identity": self.run_identity,
                                    **self.state})
    self.on_checkpoint()

  def restore(self) -> bool:
    if not self._state_path().exists() or not self.manager.latest_checkpoint:
      return False
    saved = json.loads(self._state_path().read_text())
    changed = sorted(k for k, v in saved["settings"].items()
                     if self.settings.to_dict().get(k) != v
                     and k != "checkpoint_every_steps")
    if changed:
      raise ResumeMismatch(
          f"{self.workdir} holds a pre-training run with other settings "
          f"({', '.join(changed)}); resume with the same options or choose "
          "another OUT")
    if saved["identity"] != self.run_identity:
      raise ResumeMismatch(f"{self.workdir} holds a pre-training run on other "
                           "texts or another encoder")
    self.checkpoint.restore(
        self.manager.latest_checkpoint).assert_existing_objects_matched()
    self.state = {k: saved[k] for k in self.state}
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
            f"checkpoint ({self.manager.latest_checkpoint or 'none yet'}) is "
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

