"""Pre-training examples: unlabelled texts cut into chunks of wordpieces, and
whole-word masks over them.

Each text's wordpieces are cut into consecutive chunks of seq_length - 2
(never across texts) between [CLS] and [SEP]. Whole words are masked: a word
split into wordpieces is predicted whole or not at all. The masks are pure
functions of the random generator they are given, so a resumed run draws
the same ones.
"""
import dataclasses
import time
from typing import Callable, List

import numpy as np
import tensorflow as tf

from train.data.review_packer import clean_markup

# Of the wordpieces chosen for prediction: this share becomes [MASK], as
# many again a random wordpiece, the rest stay as they are (BERT's recipe:
# the model cannot tell which unmasked wordpieces it will be asked about).
_MASKED_SHARE, _RANDOM_SHARE = 0.8, 0.1


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
