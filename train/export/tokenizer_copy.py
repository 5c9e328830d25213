"""The tokenizer copy: the exported model's `tokenize` signature as Hugging
Face's `tokenizers` runs it (`engines.fast_tokenizer`), so that a worker
computing with the int8 or float32 copy never loads TensorFlow.

Made from the SavedModel itself: the vocabulary is read out of its lookup
table, the packing (truncation, line breaks) is the card's, and lower-casing
is whichever of the two ways the signature agrees with. Offered only where
every id matches the signature's on the held-out reviews and on `PROBES`,
texts made to find where WordPiece implementations part (accents, scripts
without spaces, control and format characters, long words, the special
tokens written out); otherwise the card says which text differed and
workers keep the signature. Staged beside the model directory and installed
by `train.export.copies`, as the other copies.
"""
import pathlib
import shutil
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from engines import fast_tokenizer
from runtime.filesystems import sha256_of
from schemas import model_dir as contract

CLS, SEP, PAD, UNK = "[CLS]", "[SEP]", "[PAD]", "[UNK]"
PROBES = (
    "Café naïve résumé ÉLAN", "我喜欢这部电影，真的！", "映画は良かった", "영화 좋아요",
    "a\x00b\x96c d\x7f", "zero\u200bwidth\u00adsoft", "🎬🎬🎬 great 👍🏽",
    "a" * 150, "ж" * 60, "ж" * 24, "ǆ" * 40 + " ok",
    "<br /><BR/><br  />one<br>two<br/ >three", "[CLS] [SEP] [UNK] [MASK] [PAD]",
    "İstanbul straße ﬁne ＡＢＣ ΣΑΣ ΌΣΟΣ", "a\u2028b\u00a0c\u3000d",
    "مرحبا بالعالم", "नमस्ते दुनिया", "", "   ", "\t\n\r",
    "don't 1,000.50 ½ … \ufffd", "x" * 99 + " " + "y" * 101,
    "e\u0301 n\u0303 ᾼ ﬃ Ⅻ", "<b>bold</b> &amp; &lt; http://x.io/a?b=c",
    "🇺🇸 👨‍👩‍👧 \U0001f600",
    " ".join(f"word{i}" for i in range(600)),
)
# Texts per call of the signature when comparing.
_BATCH = 256


class TokenizerCopyFailed(Exception):
  """The copy could not be made: workers tokenize with the SavedModel."""


def staging_dir(model_dir) -> pathlib.Path:
  return pathlib.Path(model_dir) / (contract.TOKENIZER_COPY_DIR + ".partial")


# Why a model has no tokenizer copy, where that is no failure.
UNREADABLE_VOCABULARY = ("its preprocessor keeps the vocabulary where it "
                         "cannot be read (a TF Hub preprocessor)")
NOT_INSTALLED = ("`tokenizers` is not installed (pip install tokenizers, then "
                 "`reviewscore optimize MODEL --data DATA` adds the copy)")


def _vocabulary(module) -> Optional[Dict[str, int]]:
  """token -> id, read out of the SavedModel's vocabulary table (None where
  the preprocessor's table is not ours to read)."""
  import tensorflow as tf
  table = getattr(getattr(module, "packer", None), "vocab_table", None)
  if table is None:
    return None
  keys, values = tf.raw_ops.LookupTableExportV2(
      table_handle=table.resource_handle, Tkeys=tf.string, Tvalues=tf.int64)
  vocabulary = {k.decode("utf-8"): int(v)
                for k, v in zip(keys.numpy(), values.numpy(), strict=True)}
  missing = [t for t in (CLS, SEP, PAD, UNK) if t not in vocabulary]
  if missing:
    raise TokenizerCopyFailed(f"the vocabulary lacks {missing}")
  return vocabulary


def _write_tokenizer(path: pathlib.Path, vocabulary: Dict[str, int]) -> None:
  """tokenizer.json: BERT's cleaning, CJK splitting and accent stripping,
  its pre-tokenizer and WordPiece, nothing added (no special tokens matched
  in the text, no truncation, no [CLS]: `FastTokenizer` packs)."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
  tokenizer = Tokenizer(models.WordPiece(
      vocab=vocabulary, unk_token=UNK,
      max_input_chars_per_word=fast_tokenizer.MAX_BYTES_PER_WORD))
  tokenizer.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=True,
      lowercase=False)  # FastTokenizer lower-cases first, as TensorFlow does
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.save(str(path))


def _signature_ids(module, texts: Sequence[str]) -> List[np.ndarray]:
  import tensorflow as tf
  tokenize = module.signatures[contract.TOKENIZE_SIGNATURE]
  out = []
  for start in range(0, len(texts), _BATCH):
    result = tokenize(**{contract.TEXT_INPUT: tf.constant(
        list(texts[start:start + _BATCH]), tf.string)})
    ids = result[contract.TOKEN_IDS].numpy()
    counts = result[contract.NUM_TOKENS].numpy()
    out += [row[:int(n)] for row, n in zip(ids, counts, strict=True)]
  return out


def _first_difference(expected: List[np.ndarray], texts: Sequence[str],
                      tokenizer: "fast_tokenizer.FastTokenizer"
                      ) -> Tuple[int, Optional[int]]:
  """(texts whose ids differ, the first of them) between the signature's
  ids and the copy's."""
  got = []
  for start in range(0, len(texts), _BATCH):
    got += tokenizer.token_lists(texts[start:start + _BATCH])
  differing = [i for i, (a, b) in enumerate(zip(expected, got, strict=True))
               if not np.array_equal(a, b)]
  return len(differing), (differing[0] if differing else None)


def make_tokenizer_copy(model_dir, *, module, texts: Sequence[str],
                        truncation: Dict, progress: Callable[[str], None] = print
                        ) -> Tuple[contract.TokenizerCopy,
                                   Optional[pathlib.Path]]:
  """Writes DIR/tokenizer.partial/ from the loaded DIR/saved_model and
  compares it with the signature on `texts` (held-out reviews) and PROBES.

  `truncation`: the card's (`ReviewPacker.describe()`). Returns the card's
  record and the staged folder (None where not offered).
  TokenizerCopyFailed, nothing left behind, where a step fails.
  """
  staging = staging_dir(model_dir)
  shutil.rmtree(staging, ignore_errors=True)
  if not fast_tokenizer.available():
    return _not_offered(NOT_INSTALLED, contract.TOKENIZER_ENGINE, progress)
  runtime = f"{contract.TOKENIZER_ENGINE} {fast_tokenizer.version()}"
  try:
    vocabulary = _vocabulary(module)
    if vocabulary is None:
      return _not_offered(UNREADABLE_VOCABULARY, runtime, progress)
    staging.mkdir(parents=True)
    path = staging / contract.TOKENIZER_FILE
    _write_tokenizer(path, vocabulary)
    compared = list(PROBES) + list(texts)
    expected = _signature_ids(module, compared)
    packing = dict(
        head_tokens=int(truncation["head_tokens"]),
        tail_tokens=int(truncation.get("tail_tokens") or 0),
        clean_line_breaks=truncation.get("markup") != "kept",
        cls_id=vocabulary[CLS], sep_id=vocabulary[SEP],
        unk_id=vocabulary[UNK])
    found = None
    for lower_case in (True, False):
      record = contract.TokenizerCopy(
          offered=True, runtime=runtime,
          files_sha256={contract.TOKENIZER_FILE: sha256_of(str(path))},
          lower_case=lower_case, compared_reviews=len(texts),
          compared_probes=len(PROBES), **packing)
      differing, first = _first_difference(
          expected, compared, fast_tokenizer.FastTokenizer(path, record))
      if found is None or differing < found[1]:
        found = (record, differing, first)
      if not differing:
        break
  except TokenizerCopyFailed:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  except Exception as e:  # tokenizers', TensorFlow's, the filesystem's
    shutil.rmtree(staging, ignore_errors=True)
    raise TokenizerCopyFailed(f"{type(e).__name__}: {e}") from e
  record, differing, first = found
  compared_on = (f"{len(texts):,} held-out reviews and {len(PROBES)} probe "
                 "texts")
  if not differing:
    progress(f"tokenizer: copy offered (the same ids as the SavedModel on "
             f"{compared_on}; workers computing with a copy load no "
             "TensorFlow)")
    return record, staging
  shutil.rmtree(staging, ignore_errors=True)
  which = (f"probe {first}: {PROBES[first][:40]!r}" if first < len(PROBES)
           else f"held-out review {first - len(PROBES)}")
  reason = (f"{differing} of {compared_on} tokenized differently from the "
            f"SavedModel (the first: {which})")
  return _not_offered(reason, runtime, progress,
                      compared_reviews=len(texts), compared_probes=len(PROBES))


def _not_offered(reason: str, runtime: str, progress, **compared):
  progress(f"tokenizer: no copy ({reason}); workers tokenize with the "
           "SavedModel")
  return contract.TokenizerCopy(offered=False, runtime=runtime,
                                files_sha256={}, reason=reason,
                                **compared), None
