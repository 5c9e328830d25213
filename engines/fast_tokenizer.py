"""The model's tokenizer copy: its WordPiece as Hugging Face's `tokenizers`
(Rust) runs it, so that a worker that computes with an ONNX Runtime or
OpenVINO copy never loads TensorFlow (its import and the SavedModel's load
are most of a scoring process's start-up: benchmarks/int8_runtime.py
--startup).

The SavedModel's `tokenize` signature stays the contract: the copy is made
from its vocabulary and packing (`train.export.tokenizer_copy`) and offered
only where it gives the same ids on the held-out reviews and on text made
to find differences. What the two tokenizers do differently by design is
done here as the SavedModel does it: HTML line breaks become spaces before
anything (unless the model was trained on them), a word of more than
`MAX_BYTES_PER_WORD` UTF-8 bytes is one [UNK] (tensorflow-text counts bytes,
`tokenizers` characters), lower-casing is Python's (Unicode's context
rules, which `tokenizers` does not apply), and head+tail truncation with
[CLS] and [SEP] around is numpy's.
"""
import os
import re
from typing import List, Sequence

import numpy as np

from schemas import model_dir as contract

# tensorflow-text's BertTokenizer default: longer words are one [UNK].
MAX_BYTES_PER_WORD = 100
# The SavedModel's markup cleaning (`<br />`, any case), in RE2's ASCII
# sense of spaces: the same matches as the TensorFlow regex.
_LINE_BREAK = re.compile(r"<[bB][rR][\t\n\f\r ]*/?>")
# A word of more than MAX_BYTES_PER_WORD bytes has at least this many
# characters (4 bytes at most each), not all ASCII (an ASCII word that long
# has over 100 characters, which `tokenizers` makes [UNK] too).
_LONG_RUN = re.compile(r"[^\s]{%d,}" % (MAX_BYTES_PER_WORD // 4 + 1))


def _may_have_long_words(text: str) -> bool:
  return any(not run.isascii() and len(run.encode("utf-8")) > MAX_BYTES_PER_WORD
             for run in _LONG_RUN.findall(text))


def version() -> str:
  """The installed `tokenizers` release, e.g. 0.23.3."""
  from importlib import metadata
  return metadata.version("tokenizers")


def available() -> bool:
  """Whether `tokenizers` can be imported in this process."""
  import importlib.util
  return importlib.util.find_spec("tokenizers") is not None


class FastTokenizer:
  """Raw strings → the SavedModel's token ids, one int32 array per text
  ([CLS] … [SEP], truncated as the model was trained, unpadded)."""

  def __init__(self, path: str, copy: "contract.TokenizerCopy"):
    from tokenizers import Tokenizer
    self._tokenizer = Tokenizer.from_file(os.fspath(path))
    self._tokenizer.no_truncation()
    self._tokenizer.no_padding()
    self._copy = copy

  def token_lists(self, texts: Sequence[str]) -> List[np.ndarray]:
    copy = self._copy
    if copy.clean_line_breaks:
      texts = [_LINE_BREAK.sub(" ", t) for t in texts]
    if copy.lower_case:
      # Python's lower-casing is Unicode's full mapping with its context
      # rules (a final sigma), as TensorFlow's; `tokenizers` maps each
      # character alone.
      texts = [t.lower() for t in texts]
    encodings = self._tokenizer.encode_batch(list(texts),
                                             add_special_tokens=False)
    out = []
    for text, encoding in zip(texts, encodings, strict=True):
      ids = encoding.ids
      if _may_have_long_words(text):
        ids = _long_words_unknown(encoding, copy.unk_id)
      out.append(self._pack(ids))
    return out

  def _pack(self, ids: List[int]) -> np.ndarray:
    copy = self._copy
    head = min(len(ids), copy.head_tokens)
    tail = min(max(len(ids) - copy.head_tokens, 0), copy.tail_tokens)
    kept = ids[:head] + (ids[len(ids) - tail:] if tail else [])
    return np.asarray([copy.cls_id, *kept, copy.sep_id], np.int32)


def _long_words_unknown(encoding, unk_id: int) -> List[int]:
  """The encoding's ids with every word of more than MAX_BYTES_PER_WORD
  UTF-8 bytes (as normalized: its pieces spell it) made one [UNK]."""
  ids: List[int] = []
  word_pieces: List[int] = []  # positions of the current word's pieces

  def flush():
    spelled = "".join(encoding.tokens[p].removeprefix("##")
                      for p in word_pieces)
    if len(spelled.encode("utf-8")) > MAX_BYTES_PER_WORD:
      ids.append(unk_id)
    else:
      ids.extend(encoding.ids[p] for p in word_pieces)
    word_pieces.clear()

  previous = None
  for position, word in enumerate(encoding.word_ids):
    if word_pieces and word != previous:
      flush()
    word_pieces.append(position)
    previous = word
  if word_pieces:
    flush()
  return ids
