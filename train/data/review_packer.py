"""Strings → BERT inputs with the truncation a model was trained with.

`head` keeps the first wordpieces (what TF Hub's preprocessor does);
`head+tail` keeps the first `head_tokens` and fills the rest of the budget
with the last ones, the best strategy for long reviews in Sun et al. (2019),
"How to Fine-Tune BERT for Text Classification?". Works with any TF Hub-style
preprocessor through its `tokenize` and `bert_pack_inputs`.
"""
import tensorflow as tf

from train.settings import TRUNCATIONS
# HTML line breaks, as scraped reviews (IMDB's among them) carry them: four
# wordpieces each ("<", "br", "/", ">") that say nothing about the review and
# that text from elsewhere lacks, so a model trained on them learns a quirk.
_LINE_BREAK_MARKUP = r"(?i)<br\s*/?>"


def clean_markup(strings):
  """[batch] strings with HTML line breaks replaced by spaces."""
  return tf.strings.regex_replace(strings, _LINE_BREAK_MARKUP, " ")


class ReviewPacker(tf.Module):

  def __init__(self, preprocessor, *, seq_length: int, truncation: str = "head",
               head_tokens: int = 128, markup: bool = False, name=None):
    """`markup`: keep HTML line breaks in the text (the default drops
    them)."""
    super().__init__(name=name)
    if truncation not in TRUNCATIONS:
      raise ValueError(f"truncation must be one of {TRUNCATIONS}")
    vocab_table = getattr(preprocessor, "vocab_table", None)
    if vocab_table is not None:
      # Ours (import-encoder's): its vocabulary table is the one resource
      # packing needs, so the preprocessor itself is not a dependency, and an
      # exported model holds the packing functions it calls rather than every
      # variant the preprocessor was traced for (segment pairs, word input...)
      # with their ragged assertions, which scoring workers load.
      self.preprocessor = self._no_dependency(preprocessor)
      self.vocab_table = vocab_table
    else:  # TF Hub's preprocessors: their resources are not known by name
      self.preprocessor = preprocessor
    self.seq_length = seq_length
    self.truncation = truncation
    self.markup = markup
    budget = seq_length - 2  # [CLS] and [SEP]
    self.head_tokens = min(head_tokens, budget) if truncation == "head+tail" else budget
    self.tail_tokens = budget - self.head_tokens

  def _truncate(self, tokens: tf.RaggedTensor) -> tf.RaggedTensor:
    if self.tail_tokens == 0:
      return tokens[:, :self.head_tokens]
    lengths = tokens.row_lengths()
    head = tf.minimum(lengths, self.head_tokens)
    tail = tf.clip_by_value(lengths - self.head_tokens, 0, self.tail_tokens)
    keep = tf.concat([tf.ragged.range(head),
                      tf.ragged.range(lengths - tail, lengths)], axis=1)
    return tf.gather(tokens, keep, batch_dims=1)

  def pack(self, strings):
    """[batch] strings → dict of int32 [batch, seq_length] BERT inputs."""
    if not self.markup:
      strings = clean_markup(strings)
    words = self.preprocessor.tokenize(strings)
    tokens = tf.cast(words.merge_dims(-2, -1), tf.int32)
    return self.preprocessor.bert_pack_inputs([self._truncate(tokens)],
                                              self.seq_length)

  def describe(self) -> dict:
    return {"seq_length": self.seq_length, "truncation": self.truncation,
            "head_tokens": self.head_tokens, "tail_tokens": self.tail_tokens,
            "markup": "kept" if self.markup else "line breaks removed"}
