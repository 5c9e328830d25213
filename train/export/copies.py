"""A model's derived copies (int8, float32, tokenizer), made from one loaded
SavedModel and installed together with the card that describes them.

Training and `optimize` both come here. Each copy is staged beside the model
directory (`int8.partial`, `float32.partial`, `tokenizer.partial`); only when every copy is made
are they moved into place and the card written, and a failure while doing
that puts back what was there: a model directory is never half-made.
"""
import dataclasses
import importlib.util
import pathlib
import shutil
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from runtime.hardware import FLOAT32
from schemas import model_dir as contract
from train.export import float32_copy, quantize, tokenizer_copy
from train.loops.trainer import TokenizedReviews

# What training without the quantizer's packages says about the int8 copy.
INT8_EXTRA_MISSING = (
    "tf2onnx is not installed: `pip install 'reviewscore[int8]'`, then "
    "`reviewscore optimize MODEL --data DATA` adds the copy")


def int8_tools_installed() -> bool:
  return all(importlib.util.find_spec(name) for name in ("tf2onnx", "onnx"))


def guard_reviews(validation: TokenizedReviews,
                  unused: Optional[TokenizedReviews], *, seed: int,
                  count: int = contract.INT8_GUARD_REVIEWS
                  ) -> Tuple[TokenizedReviews, str]:
  """(up to `count` held-out reviews, which ones in words): the validation
  split (a seeded sample of it where it is larger), then reviews training
  did not use."""
  if len(validation) >= count:
    rows = np.sort(np.random.default_rng([seed, count]).choice(
        len(validation), size=count, replace=False))
    return _rows(validation, rows), f"{count:,} validation reviews"
  if unused is None or not len(unused):
    return validation, f"{len(validation):,} validation reviews"
  extra = min(count - len(validation), len(unused))
  return (validation + _rows(unused, np.arange(extra)),
          f"{len(validation):,} validation reviews and {extra:,} labelled "
          "reviews training did not use")


def _rows(reviews: TokenizedReviews, rows: np.ndarray) -> TokenizedReviews:
  return TokenizedReviews(reviews.word_ids[rows], reviews.lengths[rows],
                          reviews.labels[rows])


@dataclasses.dataclass
class MadeCopies:
  """What making the copies gave: the card's records, the accuracy each
  engine measured, and the staged folders (final folder -> staged one, or
  None for a copy that is not, or no longer, offered)."""
  int8: Optional[dict]
  float32: Optional[dict]
  measured: Dict[str, Dict]
  staged: Dict[str, Optional[pathlib.Path]]
  failed: List[str] = dataclasses.field(default_factory=list)
  tokenizer: Optional[dict] = None


def make_copies(model_dir, *, validation: TokenizedReviews,
                guard: Optional[TokenizedReviews], guard_from: str,
                threshold: Optional[float], int8: bool, float32: bool,
                architecture=None,
                max_accuracy_drop: float = contract.INT8_MAX_ACCURACY_DROP,
                truncation: Optional[Dict] = None,
                held_out_texts: Sequence[str] = (),
                progress: Callable[[str], None] = print) -> MadeCopies:
  """Stages the copies asked for of DIR/saved_model's float32 classifier
  (`architecture`: `engines.onnx_bert.Architecture`, for the int8 copy's
  fused graph) and, given the card's `truncation`, of its tokenizer,
  compared on `held_out_texts`."""
  import tensorflow as tf

  from runtime import text_ops
  model_dir = pathlib.Path(model_dir)
  text_ops.register_text_ops()  # the SavedModel's tokenizer ops
  module = tf.saved_model.load(str(model_dir / contract.SAVED_MODEL_DIR))
  signature = contract.classify_signature_for(FLOAT32)
  made = MadeCopies(None, None, {}, {})

  def attempt(field, folder, failure, make, *, failed_as, refused):
    """One copy: its record and staged folder, or where `make` raises
    `failure`, a refused record, a line saying what scoring keeps, and the
    failure for `optimize` to report."""
    try:
      record, made.staged[folder] = make()
      setattr(made, field, record.to_dict())
    except failure as e:
      progress(refused.format(e=e))
      setattr(made, field, {"offered": False, "reason": failed_as.format(e=e)})
      made.failed.append(f"{field} copy: {failed_as.format(e=e)}")

  if truncation is not None:
    attempt("tokenizer", contract.TOKENIZER_COPY_DIR,
            tokenizer_copy.TokenizerCopyFailed,
            lambda: tokenizer_copy.make_tokenizer_copy(
                model_dir, module=module, texts=held_out_texts,
                truncation=truncation, progress=progress),
            failed_as="failed: {e}", refused="tokenizer: no copy (it failed: "
            "{e}); workers tokenize with the SavedModel")
  if signature not in module.signatures:
    if int8 or float32:
      progress("copies: none (the model has no float32 classifier)")
    return made
  if int8 and not int8_tools_installed():
    progress(f"int8: no copy ({INT8_EXTRA_MISSING})")
    made.int8 = {"offered": False, "reason": INT8_EXTRA_MISSING}
  elif int8:
    def int8_copy():
      record, made.measured, staged = quantize.make_int8_copy(
          model_dir, module=module, float32_signature=signature,
          guard=guard if guard is not None else validation,
          guard_source=guard_from, threshold=threshold,
          architecture=architecture, max_accuracy_drop=max_accuracy_drop,
          progress=progress)
      return record, staged
    attempt("int8", contract.INT8_COPY_DIR, quantize.QuantizationError,
            int8_copy, failed_as="quantization failed: {e}",
            refused="int8: no copy (quantization failed: {e}); scoring keeps "
            "float32")
  if float32:
    attempt("float32", contract.FLOAT32_COPY_DIR, float32_copy.CopyFailed,
            lambda: float32_copy.make_float32_copy(
                model_dir, module=module, float32_signature=signature,
                validation=validation, progress=progress),
            failed_as="conversion failed: {e}",
            refused="float32 copy: none (conversion failed: {e}); scoring "
            "keeps TensorFlow")
  return made


def discard(model_dir, made: MadeCopies) -> None:
  """Removes the staged folders (a run that stops before installing)."""
  for staged in made.staged.values():
    if staged is not None:
      shutil.rmtree(staged, ignore_errors=True)


def install(model_dir, made: MadeCopies, write_card: Callable[[], None]
            ) -> None:
  """Moves the staged copies into place, then writes the card; where any of
  it fails, every step is undone (the folders that were there are put back,
  and the old card, never rewritten, still describes them) and nothing
  staged is left."""
  model_dir = pathlib.Path(model_dir)
  undo = []
  try:
    for folder, staged in made.staged.items():
      final = model_dir / folder
      if final.exists():
        aside = model_dir / (folder + ".replaced")
        shutil.rmtree(aside, ignore_errors=True)
        final.rename(aside)
        undo.append(lambda final=final, aside=aside: aside.rename(final))
      if staged is not None:
        staged.rename(final)
        undo.append(lambda final=final, staged=staged: final.rename(staged))
    write_card()
  except BaseException:
    for step in reversed(undo):
      step()
    discard(model_dir, made)
    raise
  for folder in made.staged:
    shutil.rmtree(model_dir / (folder + ".replaced"), ignore_errors=True)
