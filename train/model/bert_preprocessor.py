"""A BERT preprocessor with the interface of TF Hub's `bert_en_uncased_preprocess/3`.

Calling it maps a batch of strings to `input_word_ids`, `input_mask` and
`input_type_ids` of a fixed sequence length; its `tokenize` and
`bert_pack_inputs` functions expose the two halves for custom packing (sentence
pairs, head+tail truncation, dynamic padding), as TF Hub's preprocessors do.

Text is normalised as Hugging Face's `BertTokenizer` does it, not as
tensorflow-text's `lower_case=True` does (NFKC case folding): the encoders are
imported from HF checkpoints, so their word ids must be the ones the weights
were trained on. NFKC splits "sweden´s", turns "½" into "1⁄2" and "…" into
"...", and a C1 control such as U+0096 splits a word where HF deletes it; on
the IMDB test set that changed the ids of about 1% of the reviews.
"""
import pathlib
from typing import List, Sequence

import tensorflow as tf
import tensorflow_text as text

CLS_TOKEN, SEP_TOKEN, PAD_TOKEN, UNK_TOKEN = "[CLS]", "[SEP]", "[PAD]", "[UNK]"

TEXT_SPEC = tf.TensorSpec([None], tf.string, name="text")

# Hugging Face's BertNormalizer(clean_text=True): control and format
# characters (but \t \n \r), private-use, surrogates and U+FFFD are deleted,
# and every Unicode space or line separator becomes " ".
_DELETED_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\p{Cf}\p{Co}\p{Cs}\x{FFFD}]"
_SPACE_CHARS = r"[\t\n\r\p{Z}]"


def normalize_like_hf(strings, lower_case: bool):
  """Cleans (and lower-cases, strips accents of) text as HF's BERT does.

  Lower-casing is Unicode's full mapping (not NFKC case folding), then NFD and
  removal of non-spacing marks, as in HF's `strip_accents`.
  """
  strings = tf.strings.regex_replace(strings, _DELETED_CHARS, "")
  strings = tf.strings.regex_replace(strings, _SPACE_CHARS, " ")
  if lower_case:
    strings = tf.strings.lower(strings, encoding="utf-8")
    strings = text.normalize_utf8(strings, "NFD")
    strings = tf.strings.regex_replace(strings, r"\p{Mn}", "")
  return strings


def read_vocabulary(path) -> List[str]:
  lines = pathlib.Path(path).read_text(encoding="utf-8").split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return lines


class BertPreprocessor(tf.Module):
  """Strings → BERT inputs, with WordPiece from tensorflow-text."""

  def __init__(self, vocabulary: Sequence[str], *, lower_case: bool,
               seq_length: int = 128, name=None):
    super().__init__(name=name)
    index = {token: i for i, token in enumerate(vocabulary)}
    missing = [t for t in (CLS_TOKEN, SEP_TOKEN, PAD_TOKEN, UNK_TOKEN)
               if t not in index]
    if missing:
      raise ValueError(f"vocabulary lacks special tokens {missing}")
    if seq_length < 3:
      raise ValueError(f"seq_length must be at least 3, got {seq_length}")
    self.vocab_table = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(vocabulary)),
            tf.range(len(vocabulary), dtype=tf.int64)),
        num_oov_buckets=1)
    # lower_case=False: tensorflow-text would NFKC-fold; normalize_like_hf
    # lower-cases in `tokenize` instead.
    self.tokenizer = text.BertTokenizer(
        self.vocab_table, lower_case=False, token_out_type=tf.int32,
        unknown_token=UNK_TOKEN)
    self.cls_id = index[CLS_TOKEN]
    self.sep_id = index[SEP_TOKEN]
    self.pad_id = index[PAD_TOKEN]
    self.seq_length = tf.Variable(seq_length, trainable=False, dtype=tf.int32,
                                  name="seq_length")
    self.lower_case = lower_case
    self.vocab_size = len(vocabulary)
    self.vocabulary_file = None  # set by save() to the SavedModel asset

  @tf.function(input_signature=[TEXT_SPEC])
  def tokenize(self, strings):
    """[batch] strings → int32 RaggedTensor [batch, words, wordpieces]."""
    return self.tokenizer.tokenize(normalize_like_hf(strings, self.lower_case))

  @tf.function
  def bert_pack_inputs(self, segments, seq_length=None):
    """Packs 1 or 2 tokenized segments into fixed-length BERT inputs.

    Each segment is a RaggedTensor [batch, words, wordpieces] (from
    `tokenize`) or [batch, tokens]. Long segments are trimmed round-robin so
    that [CLS] a [SEP] (b [SEP]) fits in `seq_length`.
    """
    if seq_length is None:
      seq_length = self.seq_length
    flat = [s.merge_dims(-2, -1) if s.ragged_rank > 1 else s for s in segments]
    flat = [tf.cast(s, tf.int32) for s in flat]
    budget = seq_length - len(flat) - 1
    trimmed = text.RoundRobinTrimmer(max_seq_length=budget).trim(flat)
    word_ids, type_ids = text.combine_segments(
        trimmed, start_of_sequence_id=self.cls_id, end_of_segment_id=self.sep_id)
    word_ids, mask = text.pad_model_inputs(word_ids, max_seq_length=seq_length,
                                           pad_value=self.pad_id)
    type_ids, _ = text.pad_model_inputs(type_ids, max_seq_length=seq_length)
    return {"input_word_ids": word_ids, "input_mask": mask,
            "input_type_ids": type_ids}

  @tf.function(input_signature=[TEXT_SPEC])
  def __call__(self, strings):
    return self.bert_pack_inputs([self.tokenize(strings)])

  def trace_for_export(self):
    """Traces the packing functions for the input structures callers use."""
    words = tf.RaggedTensorSpec([None, None, None], tf.int32, ragged_rank=2)
    tokens = tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1)
    length = tf.TensorSpec([], tf.int32)
    for segments in ([words], [tokens], [words, words], [tokens, tokens]):
      self.bert_pack_inputs.get_concrete_function(segments)
      self.bert_pack_inputs.get_concrete_function(segments, length)
