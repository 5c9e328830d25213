"""The float32 copy: the float32 classifier converted to OpenVINO as it is,
which CPU workers score float32 with.

Catches: a copy offered without being compared with TensorFlow, a copy
whose numbers are not TensorFlow's (weights lost in conversion score near
random, which still "runs"), a CPU worker that ignores the copy or a model
without one that no longer scores, a missing or altered copy scored
silently in TensorFlow (`test_int8`'s damaged-copy test covers both
copies), and `optimize` not adding it.
"""
import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import model_dir as contract

ZEN3_FLAGS = {"avx2", "fma"}


def _card(model_dir):
  return json.loads((model_dir / contract.MODEL_CARD_FILE).read_text())


@pytest.fixture(scope="module")
def reviews_parquet(imdb_dir, tmp_path_factory):
  table = pq.read_table(imdb_dir / "test.parquet",
                        columns=["review_id", "text", "label"])
  path = tmp_path_factory.mktemp("float32-input") / "reviews.parquet"
  pq.write_table(pa.concat_tables([table.slice(0, 24), table.slice(12500, 24)]),
                 path)
  return path


def _without_copy(model_dir, target):
  """The same model with the float32 copy gone from its card and disk."""
  shutil.copytree(model_dir, target)
  card = _card(target)
  card["float32_copy"] = None
  (target / contract.MODEL_CARD_FILE).write_text(json.dumps(card))
  shutil.rmtree(target / contract.FLOAT32_COPY_DIR)
  return target


def _scores(prefix):
  table = pq.read_table([str(p) for p in
                         sorted(prefix.parent.glob(f"{prefix.name}-*.parquet"))])
  return dict(zip(table["review_id"].to_pylist(),
                  zip(table["score"].to_pylist(),
                      table["label_id"].to_pylist()), strict=True))


def test_training_offers_a_float32_copy_compared_with_tensorflow(
    tiny_int8_model_dir, tiny_model_dir):
  card = _card(tiny_int8_model_dir)
  copy = card["float32_copy"]
  assert copy["offered"] is True, copy
  assert copy["runtime"].startswith("openvino ")
  assert copy["compared_reviews"] > 0
  assert 0.0 <= copy["largest_probability_difference"] <= \
      copy["max_probability_difference"]
  assert sorted(copy["files_sha256"]) == sorted(contract.FLOAT32_FILES)
  for name, digest in copy["files_sha256"].items():
    path = tiny_int8_model_dir / contract.FLOAT32_COPY_DIR / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
  assert not (tiny_int8_model_dir /
              (contract.FLOAT32_COPY_DIR + ".partial")).exists()
  parsed = contract.ModelCard.from_dict(card)
  assert set(parsed.copies) == {"int8", "float32"}
  # Asked not to (`--no-float32-copy`): no copy, no folder.
  assert _card(tiny_model_dir).get("float32_copy") is None
  assert not (tiny_model_dir / contract.FLOAT32_COPY_DIR).exists()


def test_a_cpu_worker_scores_float32_with_the_copy_as_tensorflow_does(
    tiny_int8_model_dir, reviews_parquet, tmp_path, monkeypatch):
  """Under auto on a CPU with neither VNNI nor native bfloat16 (for a model
  without an int8 copy, which auto would take there), and under --precision
  float32: the copy computes, says so, and gives TensorFlow's scores and
  decisions; the same model without the copy still scores."""
  from pipeline.run import run
  from runtime import hardware
  monkeypatch.setattr(hardware, "cpu_flags", lambda *a: frozenset(ZEN3_FLAGS))
  plain = _without_copy(tiny_int8_model_dir, tmp_path / "plain")
  no_int8 = tmp_path / "no-int8"
  shutil.copytree(tiny_int8_model_dir, no_int8)
  card = _card(no_int8)
  card["int8"] = None
  (no_int8 / contract.MODEL_CARD_FILE).write_text(json.dumps(card))
  runs = {}
  for name, model, extra in (
      ("auto", no_int8, []),
      ("float32", tiny_int8_model_dir, ["--precision=float32"]),
      ("tensorflow", plain, ["--precision=float32"])):
    out = tmp_path / name / "scores"
    result = run([f"--input={reviews_parquet}", f"--model={model}",
                  f"--output={out}", *extra],
                 save_main_session=False, echo=lambda m: None)
    manifest = json.loads(open(result.manifest_path).read())
    assert manifest["model"]["precision"]["used"] == ["float32"]
    why = manifest["model"]["precision"]["why"][0]
    assert ("OpenVINO" in why) == (name != "tensorflow"), why
    assert manifest["counts"]["scored"] == 48
    runs[name] = _scores(out)
  reference = runs["tensorflow"]
  for name in ("auto", "float32"):
    assert runs[name].keys() == reference.keys()
    for review_id, (score, label) in runs[name].items():
      assert score == pytest.approx(reference[review_id][0], abs=1e-4)
      assert label == reference[review_id][1]


def test_the_copy_computes_what_the_saved_model_does(tiny_int8_model_dir,
                                                     imdb_dir):
  """On 64 real reviews, logits and not only decisions."""
  import tensorflow as tf

  from engines.openvino_classifier import Classifier
  from pipeline.model_handler import pad_batch
  from pipeline.scoring_model import acquire_model
  texts = pq.read_table(imdb_dir / "test.parquet", columns=["text"]).slice(
      100, 64)["text"].to_pylist()
  model = acquire_model(str(tiny_int8_model_dir / contract.SAVED_MODEL_DIR))
  ids, counts = model.tokenize(texts)
  ids, mask = pad_batch([row[:int(n)] for row, n in zip(ids, counts)])
  tensorflow = model.signatures[contract.classify_signature_for("float32")](
      **{contract.TOKEN_IDS: tf.constant(ids), contract.TOKEN_MASK:
         tf.constant(mask)})[contract.OUTPUT_LOGITS].numpy()
  openvino = Classifier(tiny_int8_model_dir / contract.FLOAT32_COPY_DIR /
                        contract.FLOAT32_MODEL_FILE).classify(ids, mask)[
                            contract.OUTPUT_LOGITS]
  np.testing.assert_allclose(openvino, tensorflow, atol=1e-4)
  assert np.std(tensorflow) > 1e-3  # logits that differ between reviews


def test_a_conversion_that_fails_leaves_the_model_complete(
    tiny_model_dir, tmp_path, monkeypatch):
  """And a copy whose numbers differ is refused with the reason."""
  import tensorflow as tf

  from engines import openvino_classifier as engine
  from runtime import text_ops
  from train.export import float32_copy
  from train.loops.trainer import TokenizedReviews
  model_dir = tmp_path / "model"
  shutil.copytree(tiny_model_dir / contract.SAVED_MODEL_DIR,
                  model_dir / contract.SAVED_MODEL_DIR)
  text_ops.register_text_ops()
  module = tf.saved_model.load(str(model_dir / contract.SAVED_MODEL_DIR))
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 90, size=(16, 32)).astype(np.int32)  # tiny vocab
  reviews = TokenizedReviews(ids, np.full(16, 32, np.int32),
                             np.zeros(16, np.int32))
  signature = contract.classify_signature_for("float32")
  refused, staged = float32_copy.make_float32_copy(
      model_dir, module=module, float32_signature=signature,
      validation=reviews, max_probability_difference=-1.0,
      progress=lambda line: None)
  assert refused.offered is False and "differ from TensorFlow's" in refused.reason
  assert staged is None
  assert not (model_dir / contract.FLOAT32_COPY_DIR).exists()
  assert not (model_dir / (contract.FLOAT32_COPY_DIR + ".partial")).exists()

  def crashing(*args, **kwargs):
    raise RuntimeError("the converter crashed")
  monkeypatch.setattr(engine, "convert_signature", crashing)
  with pytest.raises(float32_copy.CopyFailed, match="the converter crashed"):
    float32_copy.make_float32_copy(model_dir, module=module,
                                   float32_signature=signature,
                                   validation=reviews,
                                   progress=lambda line: None)
  assert not (model_dir / contract.FLOAT32_COPY_DIR).exists()
  assert not (model_dir / (contract.FLOAT32_COPY_DIR + ".partial")).exists()
  assert (model_dir / contract.SAVED_MODEL_DIR /
          contract.SAVED_MODEL_GRAPH).is_file()


def test_models_without_the_field_still_load(tiny_model_dir):
  """Cards written before the copy existed have no float32_copy key."""
  card = _card(tiny_model_dir)
  card.pop("float32_copy", None)
  parsed = contract.ModelCard.from_dict(card)
  assert parsed.copies == {}
