"""The tokenizer copy: the SavedModel's `tokenize` signature for Hugging
Face's `tokenizers`, so that a worker computing with a copy loads no
TensorFlow.

Catches: a copy whose ids differ from the signature's anywhere it was
compared (on a real vocabulary: accents, scripts without spaces, control
characters, long words, special tokens written out, final sigma, line
breaks, head+tail truncation), a copy offered although it differs, a
worker that still imports TensorFlow, scores that change with the copy,
and a damaged copy used or left unrepaired.
"""
import json
import shutil
import subprocess
import sys
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import model_dir as contract

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def _card(model_dir):
  return json.loads((model_dir / contract.MODEL_CARD_FILE).read_text())


def _signature_module(preprocessor_dir, **packing):
  """What `make_tokenizer_copy` reads of a loaded SavedModel (its packer's
  vocabulary table, its `tokenize` signature), around a real preprocessor
  and training's packer."""
  import tensorflow as tf
  import tensorflow_hub as hub

  from train.data.review_packer import ReviewPacker
  packer = ReviewPacker(hub.load(str(preprocessor_dir)), **packing)

  def tokenize(text):
    packed = packer.pack(text)
    return {contract.TOKEN_IDS: packed["input_word_ids"],
            contract.NUM_TOKENS: tf.reduce_sum(packed["input_mask"], axis=1)}
  return types.SimpleNamespace(
      packer=packer, signatures={contract.TOKENIZE_SIGNATURE: tokenize}), packer


def _reviews(imdb_dir, count):
  table = pq.read_table(imdb_dir / "test.parquet", columns=["text"])
  rows = np.random.default_rng(3).choice(len(table), count, replace=False)
  return table.take(rows)["text"].to_pylist()


def test_the_copy_gives_the_signatures_ids_on_a_real_vocabulary(
    minilm_encoder_dir, imdb_dir, tmp_path):
  """all-MiniLM-L6-v2's 30,522 wordpieces, head+tail truncation, 400 real
  reviews and every probe: the same ids, so the copy is offered; a packing
  that differs (other head length) is refused, naming the first text."""
  from train.export import tokenizer_copy
  module, packer = _signature_module(
      minilm_encoder_dir / "preprocessor", seq_length=128,
      truncation="head+tail", head_tokens=32)
  texts = _reviews(imdb_dir, 400)
  # Probes of what the copy does as the signature does and plain
  # `tokenizers` does not: final sigma, long non-ASCII words, special
  # tokens written out, line breaks.
  for probe in ("ΌΣΟΣ", "ж" * 60, "[SEP]", "<BR/>"):
    assert any(probe in p for p in tokenizer_copy.PROBES)
  lines = []
  record, staged = tokenizer_copy.make_tokenizer_copy(
      tmp_path, module=module, texts=texts, truncation=packer.describe(),
      progress=lines.append)
  assert record.offered and staged is not None, record.reason
  assert record.compared_reviews == 400
  assert record.compared_probes == len(tokenizer_copy.PROBES)
  assert (record.head_tokens, record.tail_tokens) == (32, 94)
  assert record.lower_case and record.clean_line_breaks
  assert "copy offered" in lines[-1]
  from engines.fast_tokenizer import FastTokenizer
  tokenizer = FastTokenizer(staged / contract.TOKENIZER_FILE, record)
  more = _reviews(imdb_dir, 1200)[400:] + list(tokenizer_copy.PROBES)
  expected = tokenizer_copy._signature_ids(module, more)
  got = tokenizer.token_lists(more)
  assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))
  assert max(len(ids) for ids in got) == 128  # truncation was exercised

  wrong = dict(packer.describe(), head_tokens=10, tail_tokens=116)
  refused, none = tokenizer_copy.make_tokenizer_copy(
      tmp_path, module=module, texts=texts, truncation=wrong,
      progress=lines.append)
  assert not refused.offered and none is None
  assert "tokenized differently" in refused.reason
  assert "the first: probe 25" in refused.reason  # the 600-word probe
  assert not tokenizer_copy.staging_dir(tmp_path).exists()


def test_training_offers_the_copy_and_records_it(tiny_int8_model_dir):
  card = contract.ModelCard.from_dict(_card(tiny_int8_model_dir))
  copy = card.fast_tokenizer
  assert copy is not None and copy.runtime.startswith("tokenizers ")
  assert copy.compared_reviews == 40  # the tiny model's validation reviews
  import hashlib
  path = tiny_int8_model_dir / contract.TOKENIZER_COPY_DIR / contract.TOKENIZER_FILE
  assert hashlib.sha256(path.read_bytes()).hexdigest() == \
      copy.files_sha256[contract.TOKENIZER_FILE]
  # A card from before the copy existed: no copy, nothing to check.
  older = {k: v for k, v in _card(tiny_int8_model_dir).items()
           if k != "tokenizer_copy"}
  assert contract.ModelCard.from_dict(older).fast_tokenizer is None


_SCORE_AND_SAY_TENSORFLOW = """
import sys
from pipeline.run import main
code = main(sys.argv[1:])
print("tensorflow imported:", "tensorflow" in sys.modules)
sys.exit(code)
"""


def _score_in_a_process(model, reviews, out, *extra):
  return subprocess.run(
      [sys.executable, "-c", _SCORE_AND_SAY_TENSORFLOW, "--input",
       str(reviews), "--model", str(model), "--output", str(out), *extra],
      capture_output=True, text=True, cwd=REPO, timeout=300)


def _without_tokenizer_copy(model, into):
  shutil.copytree(model, into)
  card = _card(into)
  card["tokenizer_copy"] = None
  (into / contract.MODEL_CARD_FILE).write_text(json.dumps(card))
  shutil.rmtree(into / contract.TOKENIZER_COPY_DIR)
  return into


def test_a_worker_computing_with_the_copies_never_loads_tensorflow(
    tiny_int8_model_dir, imdb_dir, tmp_path):
  """The same scores with the copy as with the signature, and TensorFlow
  imported only without it (which shows the check can fail)."""
  reviews = tmp_path / "reviews.parquet"
  table = pq.read_table(imdb_dir / "test.parquet",
                        columns=["review_id", "text"])
  pq.write_table(pa.concat_tables([table.slice(0, 30), table.slice(12500, 30)]),
                 reviews)
  plain = _without_tokenizer_copy(tiny_int8_model_dir, tmp_path / "plain")
  scored = {}
  for name, model in (("copy", tiny_int8_model_dir), ("signature", plain)):
    out = tmp_path / name / "scores"
    done = _score_in_a_process(model, reviews, out, "--precision", "int8")
    assert done.returncode == 0, done.stderr
    assert ("tensorflow imported: False" if name == "copy" else
            "tensorflow imported: True") in done.stdout, done.stdout
    said = "the model's tokenizer copy" if name == "copy" else "the SavedModel"
    assert f"tokenized by {said}" in done.stderr, done.stderr
    result = pq.read_table(sorted(out.parent.glob("scores-*.parquet"))[0])
    scored[name] = dict(zip(result["review_id"].to_pylist(),
                            result["score"].to_pylist(), strict=True))
  assert len(scored["copy"]) == 60
  assert scored["copy"] == scored["signature"]


def test_a_damaged_copy_is_refused_and_optimize_remakes_it(
    tiny_int8_model_dir, tiny_training_data, imdb_dir, tmp_path):
  from click.testing import CliRunner

  from reviewscore.cli import main
  model = tmp_path / "model"
  shutil.copytree(tiny_int8_model_dir, model)
  path = model / contract.TOKENIZER_COPY_DIR / contract.TOKENIZER_FILE
  path.write_bytes(path.read_bytes() + b" ")
  reviews = tmp_path / "reviews.parquet"
  pq.write_table(pq.read_table(imdb_dir / "test.parquet",
                               columns=["review_id", "text"]).slice(0, 8),
                 reviews)
  refused = CliRunner().invoke(main, [
      "score", "--input", str(reviews), "--model", str(model),
      "--output", str(tmp_path / "out"), "--precision", "float32"])
  assert refused.exit_code == 1, refused.output
  assert str(path) in refused.output
  assert "changed since it was made" in refused.output
  repaired = CliRunner().invoke(main, [
      "optimize", str(model), "--data", str(tiny_training_data),
      "--int8-max-drop", "20"])
  assert repaired.exit_code == 0, repaired.output
  assert _card(model)["tokenizer_copy"] == _card(tiny_int8_model_dir)[
      "tokenizer_copy"]
  scored = CliRunner().invoke(main, [
      "score", "--input", str(reviews), "--model", str(model),
      "--output", str(tmp_path / "again"), "--precision", "float32"])
  assert scored.exit_code == 0, scored.output
