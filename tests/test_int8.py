"""The int8 copy: made after training for ONNX Runtime, guarded on held-out
reviews against float32, checked at load, chosen per worker, scored end to
end; models with the OpenVINO copy of before still score.

Catches: a copy offered without its accuracy measured, a copy worse than
float32 by more than the guard offered anyway (the default guard itself,
on a copy that passes and one that does not), quantization that differs
between two runs, a missing or altered copy scored silently in another
precision, auto choosing int8 where the copy does not pay (an 8-bit copy
without VNNI, a CPU without AVX2) or not choosing it where it does, int8
scores that disagree with float32's, and a failure at any step leaving a
model half-made.
"""
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from runtime.hardware import choose_precision
from schemas import model_dir as contract

ICE_LAKE_FLAGS = {"avx2", "avx512f", "avx512_vnni"}
ZEN3_FLAGS = {"avx2", "fma"}
ZEN4_FLAGS = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
ARM_FLAGS = set()  # /proc/cpuinfo lists "Features", not "flags"


def _card(model_dir):
  return json.loads((model_dir / contract.MODEL_CARD_FILE).read_text())


def test_training_offers_an_int8_copy_with_its_guard_recorded(
    tiny_int8_model_dir):
  card = _card(tiny_int8_model_dir)
  int8 = card["int8"]
  assert int8["offered"] is True, int8
  assert int8["runtime"].startswith("onnxruntime ")
  assert "7-bit" in int8["quantizer"] and "fused BERT graph" in int8["quantizer"]
  assert sorted(int8["files_sha256"]) == [contract.INT8_ONNX_FILE]
  import hashlib
  for name, digest in int8["files_sha256"].items():
    path = tiny_int8_model_dir / contract.INT8_COPY_DIR / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
  # The tiny model's data has 40 validation reviews and no unused ones.
  assert int8["compared_reviews"] == card["data"]["validation"]["rows"] == 40
  assert "40 validation reviews" in int8["compared_on"]
  assert 0 <= int8["decisions_differing"] <= int8["compared_reviews"]
  assert int8["accuracy"] >= (
      int8["float32_accuracy"] - int8["max_accuracy_drop"] - 1e-9)
  # float32 on the guard's reviews is the SavedModel's own float32
  # classifier: its decisions there are training's on validation.
  assert int8["float32_accuracy"] == pytest.approx(
      card["metrics"]["validation"]["accuracy"])
  by_precision = card["accuracy_by_precision"]
  assert by_precision["int8"]["runtime"] == int8["runtime"]
  assert by_precision["int8"]["held_out_accuracy"] == int8["accuracy"]
  assert by_precision["float32"]["runtime"].startswith("tensorflow ")
  parsed = contract.ModelCard.from_dict(card)
  assert "int8" in parsed.scoring_precisions
  assert parsed.copies["int8"].engine == contract.ONNXRUNTIME
  assert parsed.copies["int8"].pays_without_vnni
  for leftover in (".partial", ".replaced"):
    assert not (tiny_int8_model_dir / (contract.INT8_COPY_DIR + leftover)
                ).exists()


def _tokenized(model_dir, texts):
  from pipeline.model_handler import pad_batch
  from pipeline.scoring_model import acquire_model
  model = acquire_model(str(model_dir / contract.SAVED_MODEL_DIR))
  ids, counts = model.tokenize(texts)
  return model, pad_batch([row[:int(n)] for row, n in zip(ids, counts)])


def test_int8_scores_agree_with_float32(tiny_int8_model_dir, imdb_dir):
  import tensorflow as tf

  from engines.onnx_classifier import Classifier
  texts = pq.read_table(imdb_dir / "test.parquet", columns=["text"]).slice(
      0, 64)["text"].to_pylist()
  model, (ids, mask) = _tokenized(tiny_int8_model_dir, texts)
  float32 = model.signatures[contract.classify_signature_for("float32")](
      **{contract.TOKEN_IDS: tf.constant(ids), contract.TOKEN_MASK:
         tf.constant(mask)})[contract.OUTPUT_LOGITS].numpy()
  int8 = Classifier(tiny_int8_model_dir / contract.INT8_COPY_DIR /
                    contract.INT8_ONNX_FILE).classify(ids, mask)[
                        contract.OUTPUT_LOGITS]
  # The tiny model's logits sit close together, so decisions near the
  # threshold flip with any rounding (the real model's agreement is
  # measured in benchmarks/int8_runtime.py); the logits must still follow
  # float32's. Lost or shuffled weights correlate near 0.
  assert np.corrcoef(float32, int8)[0, 1] > 0.9
  # Not float32 under another name: quantization changed the numbers.
  assert not np.allclose(float32, int8, atol=1e-4)


@pytest.mark.parametrize("fused", [True, False])
def test_the_float32_graph_is_tensorflows(tiny_int8_model_dir, imdb_dir,
                                          tmp_path, fused):
  """The graph the copy is quantized from computes the SavedModel's
  outputs: written fused from the weights (our backbone) or converted op by
  op by tf2onnx (exact GELU through the Erfc mapping included)."""
  import tensorflow as tf

  from engines import onnx_bert, onnx_export
  from engines.onnx_classifier import Classifier
  card = contract.ModelCard.from_dict(_card(tiny_int8_model_dir))
  texts = pq.read_table(imdb_dir / "test.parquet", columns=["text"]).slice(
      200, 32)["text"].to_pylist()
  model, (ids, mask) = _tokenized(tiny_int8_model_dir, texts)
  signature = contract.classify_signature_for("float32")
  path = tmp_path / "float32.onnx"
  architecture = onnx_bert.Architecture.of(card.encoder, card.pooling,
                                           card.threshold)
  how = onnx_export.convert_signature(
      model.module, signature, str(path),
      architecture=architecture if fused else None, probe=(ids, mask))
  assert (how == onnx_export.FUSED) == fused, how
  import onnx
  ops = {node.op_type for node in onnx.load(str(path)).graph.node}
  assert ("Attention" in ops) == fused, ops
  onnx_out = Classifier(str(path)).classify(ids, mask)
  reference = model.signatures[signature](
      **{contract.TOKEN_IDS: tf.constant(ids),
         contract.TOKEN_MASK: tf.constant(mask)})
  assert set(onnx_out) == set(reference)
  np.testing.assert_allclose(onnx_out[contract.OUTPUT_LOGITS],
                             reference[contract.OUTPUT_LOGITS].numpy(),
                             atol=1e-5)
  np.testing.assert_array_equal(onnx_out[contract.OUTPUT_LABEL_ID],
                                reference[contract.OUTPUT_LABEL_ID].numpy())
  assert np.std(onnx_out[contract.OUTPUT_LOGITS]) > 1e-3


def test_a_fused_graph_that_is_not_the_signature_falls_back_to_tf2onnx(
    tiny_int8_model_dir, tmp_path):
  """A configuration that does not describe the weights (here: another
  head count, which splits attention otherwise) is caught by the probe,
  and an encoder without one (TF Hub's) is converted op by op."""
  from engines import onnx_bert, onnx_export
  card = contract.ModelCard.from_dict(_card(tiny_int8_model_dir))
  model, (ids, mask) = _tokenized(tiny_int8_model_dir, [
      "a wonderful film", "the worst plot and awful acting, so boring"])
  signature = contract.classify_signature_for("float32")
  wrong = dict(card.encoder["bert_config"], num_heads=1)
  for encoder in ({"bert_config": wrong}, {"handle": "https://tfhub.dev/x"}):
    how = onnx_export.convert_signature(
        model.module, signature, str(tmp_path / "graph.onnx"),
        architecture=onnx_bert.Architecture.of(encoder, card.pooling,
                                               card.threshold),
        probe=(ids, mask))
    assert how.startswith("tf2onnx "), how


@pytest.fixture
def bare_model(tiny_model_dir, tmp_path):
  """A copy of the tiny model without copies, and its loaded SavedModel."""
  import tensorflow as tf

  from runtime import text_ops
  model_dir = tmp_path / "model"
  shutil.copytree(tiny_model_dir, model_dir)
  text_ops.register_text_ops()
  return model_dir, tf.saved_model.load(
      str(model_dir / contract.SAVED_MODEL_DIR))


def _guard_reviews(count=48, seed=0):
  from train.loops.trainer import TokenizedReviews
  rng = np.random.default_rng(seed)
  lengths = rng.integers(8, 64, size=count).astype(np.int32)
  ids = np.zeros((count, 64), np.int32)
  for row, n in enumerate(lengths):
    ids[row, :n] = rng.integers(15, 90, size=n)  # words of the tiny vocab
    ids[row, 0], ids[row, n - 1] = 2, 3  # [CLS], [SEP]
  return TokenizedReviews(ids, lengths, (np.arange(count) % 2).astype(np.int32))


def _make(model_dir, module, guard, threshold=0.5, **options):
  from train.export.quantize import make_int8_copy
  return make_int8_copy(
      model_dir, module=module,
      float32_signature=contract.classify_signature_for("float32"),
      guard=guard, guard_source="test reviews", threshold=threshold,
      progress=lambda line: None, **options)


def test_quantization_is_deterministic_and_a_refused_copy_leaves_nothing(
    bare_model):
  """The same model gives a copy with the same numbers; a refused copy
  leaves no folder behind."""
  from engines.onnx_classifier import Classifier
  model_dir, module = bare_model
  guard = _guard_reviews()
  refused, _, staged = _make(model_dir, module, guard, max_accuracy_drop=-1.0)
  assert refused.offered is False and staged is None
  assert "below float32" in refused.reason
  assert refused.compared_reviews == 48
  assert not (model_dir / contract.INT8_COPY_DIR).exists()
  assert not (model_dir / (contract.INT8_COPY_DIR + ".partial")).exists()
  ids, mask = guard.word_ids, (guard.word_ids > 0).astype(np.int32)
  outputs = []
  for _ in range(2):
    made, _, staged = _make(model_dir, module, guard, max_accuracy_drop=1.0)
    assert made.offered
    assert sorted(p.name for p in staged.iterdir()) == [contract.INT8_ONNX_FILE]
    outputs.append(Classifier(str(staged / contract.INT8_ONNX_FILE)).classify(
        ids, mask)[contract.OUTPUT_LOGITS])
    shutil.rmtree(staged)
  np.testing.assert_array_equal(outputs[0], outputs[1])


def _flip_the_classifier(float32_onnx: str, out_path: str) -> None:
  """A 'quantizer' that writes the float32 graph with its last matmul's
  weights negated: every logit changes sign."""
  import onnx
  from onnx import numpy_helper
  model = onnx.load(float32_onnx)
  weights = {init.name: init for init in model.graph.initializer}
  last = [node for node in model.graph.node if node.op_type == "MatMul"
          and node.input[1] in weights][-1]
  init = weights[last.input[1]]
  init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init),
                                        init.name))
  onnx.save(model, out_path)


def _as_is(float32_onnx: str, out_path: str) -> None:
  shutil.copyfile(float32_onnx, out_path)


def _real_reviews(module, data):
  """The tiny model's labelled training reviews (on which it does better
  than chance), tokenized by the model's own signature."""
  import tensorflow as tf

  from train.loops.trainer import TokenizedReviews
  table = pq.read_table(data / "train.parquet", columns=["text", "label"])
  out = module.signatures[contract.TOKENIZE_SIGNATURE](
      **{contract.TEXT_INPUT: tf.constant(table["text"].to_pylist())})
  return TokenizedReviews(out[contract.TOKEN_IDS].numpy().astype(np.int32),
                          out[contract.NUM_TOKENS].numpy().astype(np.int32),
                          table["label"].to_numpy().astype(np.int32))


def test_the_default_guard_offers_a_copy_that_holds_and_refuses_one_that_does_not(
    bare_model, tiny_training_data, monkeypatch):
  """With the default 0.2-point guard, on real labelled reviews: a copy
  deciding as float32 does is offered (none of its decisions differ); one
  whose logits are negated is refused, the card saying by how much."""
  from engines import onnx_export
  model_dir, module = bare_model
  guard = _real_reviews(module, tiny_training_data)
  threshold = _card(model_dir)["threshold"]
  monkeypatch.setattr(onnx_export, "quantize", _as_is)
  holds, _, staged = _make(model_dir, module, guard, threshold)
  assert holds.max_accuracy_drop == contract.INT8_MAX_ACCURACY_DROP
  assert holds.offered and holds.decisions_differing == 0
  assert holds.accuracy == holds.float32_accuracy > 0.5
  shutil.rmtree(staged)
  monkeypatch.setattr(onnx_export, "quantize", _flip_the_classifier)
  flipped, _, staged = _make(model_dir, module, guard, threshold)
  assert staged is None and not flipped.offered
  assert flipped.decisions_differing > len(guard) // 2
  drop = flipped.float32_accuracy - flipped.accuracy
  assert drop > contract.INT8_MAX_ACCURACY_DROP
  assert f"{drop * 100:.2f} points below float32" in flipped.reason
  assert not (model_dir / (contract.INT8_COPY_DIR + ".partial")).exists()


def test_the_guard_takes_held_out_reviews_up_to_its_count():
  """Validation first, then reviews training did not use; a larger
  validation split is sampled down (the same seed, the same reviews)."""
  from train.export.copies import guard_reviews
  validation, unused = _guard_reviews(30, seed=1), _guard_reviews(100, seed=2)
  guard, source = guard_reviews(validation, unused, seed=42, count=50)
  assert len(guard) == 50
  np.testing.assert_array_equal(guard.word_ids[:30], validation.word_ids)
  np.testing.assert_array_equal(guard.word_ids[30:], unused.word_ids[:20])
  assert source == ("30 validation reviews and 20 labelled reviews training "
                    "did not use")
  sampled, source = guard_reviews(unused, None, seed=42, count=50)
  again, _ = guard_reviews(unused, None, seed=42, count=50)
  assert len(sampled) == 50 and source == "50 validation reviews"
  np.testing.assert_array_equal(sampled.word_ids, again.word_ids)
  assert contract.INT8_GUARD_REVIEWS == 2000


@pytest.mark.parametrize("flags, available, seven_bit, expected", [
    (ICE_LAKE_FLAGS, ("float32", "bfloat16", "int8"), True, "int8"),
    # Native bfloat16 beats the 7-bit copy; the 8-bit copy of before beats
    # bfloat16 (docs/engines.md, AMD family 26).
    (ZEN4_FLAGS, ("float32", "bfloat16", "int8"), True, "bfloat16"),
    (ZEN4_FLAGS, ("float32", "bfloat16", "int8"), False, "int8"),
    (ZEN4_FLAGS, ("float32", "int8"), True, "int8"),
    (ZEN4_FLAGS, ("float32", "bfloat16"), False, "bfloat16"),
    # The 7-bit copy pays without VNNI; the 8-bit one of before does not.
    (ZEN3_FLAGS, ("float32", "bfloat16", "int8"), True, "int8"),
    (ZEN3_FLAGS, ("float32", "bfloat16", "int8"), False, "float32"),
    (ARM_FLAGS, ("float32", "int8"), True, "float32"),
    (ICE_LAKE_FLAGS, ("float32", "bfloat16"), False, "float32"),
    ({"avx2", "avx_vnni"}, ("float32", "int8"), False, "int8"),
    ({"amx_int8", "amx_bf16"}, ("float32", "bfloat16", "int8"), True,
     "bfloat16"),
])
def test_auto_chooses_by_the_cpu_and_what_the_model_carries(
    flags, available, seven_bit, expected):
  precision, why = choose_precision("auto", available=available, flags=flags,
                                    int8_pays_without_vnni=seven_bit)
  assert precision == expected, why
  assert why.startswith("auto: ")


def test_gpus_keep_tensorflow():
  assert choose_precision("auto", available=("float32", "int8"), has_gpu=True,
                          flags=ICE_LAKE_FLAGS,
                          int8_pays_without_vnni=True)[0] == "float32"


def _score(*args):
  from click.testing import CliRunner
  from reviewscore.cli import main
  return CliRunner().invoke(main, ["score", *map(str, args)])


@pytest.fixture(scope="module")
def reviews_parquet(imdb_dir, tmp_path_factory):
  import pyarrow as pa
  table = pq.read_table(imdb_dir / "test.parquet",
                        columns=["review_id", "text", "label"])
  path = tmp_path_factory.mktemp("int8-input") / "reviews.parquet"
  pq.write_table(pa.concat_tables([table.slice(0, 24), table.slice(12500, 24)]),
                 path)
  return path


def _scores(prefix):
  table = pq.read_table([str(p) for p in
                         sorted(prefix.parent.glob(f"{prefix.name}-*.parquet"))])
  return dict(zip(table["review_id"].to_pylist(), table["score"].to_pylist(),
                  strict=True))


def test_score_in_int8_end_to_end_agrees_with_float32(
    tiny_int8_model_dir, reviews_parquet, tmp_path):
  runs = {}
  for precision in ("int8", "float32"):
    out = tmp_path / precision / "scores"
    result = _score("--input", reviews_parquet, "--model", tiny_int8_model_dir,
                    "--output", out, "--precision", precision)
    assert result.exit_code == 0, result.output
    manifest = json.loads(pathlib_of(out, "-manifest.json").read_text())
    assert manifest["model"]["precision"]["used"] == [precision]
    why = manifest["model"]["precision"]["why"]
    assert len(why) == 1 and why[0].startswith(f"{precision}: asked for"), why
    assert ("ONNX Runtime" in why[0]) == (precision == "int8"), why
    assert manifest["counts"]["scored"] == 48
    runs[precision] = _scores(out)
  assert runs["int8"].keys() == runs["float32"].keys()
  ids = sorted(runs["int8"])
  int8 = [runs["int8"][k] for k in ids]
  float32 = [runs["float32"][k] for k in ids]
  assert np.corrcoef(int8, float32)[0, 1] > 0.9
  assert int8 != float32


def pathlib_of(prefix, suffix):
  import pathlib
  return pathlib.Path(f"{prefix}{suffix}")


def _damage(path, how):
  if how == "altered":
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
  else:
    path.unlink()


@pytest.mark.parametrize("damage", ["altered", "missing"])
@pytest.mark.parametrize("precision, folder, damaged_file", [
    ("int8", contract.INT8_COPY_DIR, contract.INT8_ONNX_FILE),
    ("float32", contract.FLOAT32_COPY_DIR, contract.FLOAT32_WEIGHTS_FILE)])
def test_a_damaged_copy_is_refused_naming_the_file(
    tiny_int8_model_dir, reviews_parquet, tmp_path, damage, precision, folder,
    damaged_file):
  """Under auto or the copy's precision alike: never scored silently
  another way (in another precision, or float32 in TensorFlow)."""
  model = tmp_path / "model"
  shutil.copytree(tiny_int8_model_dir, model)
  damaged = model / folder / damaged_file
  _damage(damaged, damage)
  for asked in ("auto", precision):
    out = tmp_path / damage / asked / "scores"
    result = _score("--input", reviews_parquet, "--model", model, "--output",
                    out, "--precision", asked)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert str(damaged) in lines[0]
    assert ("changed since it was made" if damage == "altered" else
            "missing") in lines[0]
    assert "reviewscore optimize" in lines[0]
    assert not out.parent.exists() or not list(out.parent.glob("*.parquet"))


def test_a_damaged_copy_the_job_cannot_use_is_not_its_business(
    tiny_int8_model_dir, reviews_parquet, tmp_path):
  """--precision float32 never computes with the int8 copy: a damaged one
  does not stop it; and the SavedModel's own commands (evaluate, predict)
  work, saying in one line which copy is damaged."""
  from click.testing import CliRunner

  from reviewscore.cli import main
  model = tmp_path / "model"
  shutil.copytree(tiny_int8_model_dir, model)
  _damage(model / contract.INT8_COPY_DIR / contract.INT8_ONNX_FILE, "altered")
  out = tmp_path / "scores"
  result = _score("--input", reviews_parquet, "--model", model, "--output",
                  out, "--precision", "float32")
  assert result.exit_code == 0, result.output
  assert len(_scores(out)) == 48
  predicted = CliRunner().invoke(main, ["predict", "--model", str(model),
                                        "A wonderful film."])
  assert predicted.exit_code == 0, predicted.output
  warnings = [line for line in predicted.output.splitlines()
              if "int8 copy" in line]
  assert len(warnings) == 1 and "reviewscore optimize" in warnings[0], \
      predicted.output


def test_the_worker_checks_the_copy_it_loads(tiny_int8_model_dir, tmp_path):
  """A copy altered after the launcher's check (or on a worker's disk) is
  refused where it is loaded."""
  from engines.model_dir import ModelError, check_copy_files
  copy = tmp_path / "int8"
  shutil.copytree(tiny_int8_model_dir / contract.INT8_COPY_DIR, copy)
  files = _card(tiny_int8_model_dir)["int8"]["files_sha256"]
  check_copy_files(str(copy), files, "int8")  # intact: no error
  _damage(copy / contract.INT8_ONNX_FILE, "altered")
  with pytest.raises(ModelError,
                     match=r"classify_tokens_int8\.onnx: changed"):
    check_copy_files(str(copy), files, "int8")


def test_auto_takes_the_copy_on_any_x86_worker(
    tiny_int8_model_dir, reviews_parquet, tmp_path, monkeypatch):
  """The worker's CPU decides, not the launcher's card: with VNNI, and with
  AVX2 alone (7-bit weights), auto scores in int8 and says why; on a CPU
  with neither (flags of no x86), float32."""
  from pipeline.run import run
  from runtime import hardware
  for name, flags, expected, because in (
      ("vnni", ICE_LAKE_FLAGS, "int8", "avx512_vnni"),
      ("avx2", ZEN3_FLAGS, "int8", "7-bit weights"),
      ("other", ARM_FLAGS, "float32", "no x86 CPU with AVX2")):
    monkeypatch.setattr(hardware, "cpu_flags", lambda *a, f=flags: frozenset(f))
    result = run([f"--input={reviews_parquet}",
                  f"--model={tiny_int8_model_dir}",
                  f"--output={tmp_path / name / 'scores'}"],
                 save_main_session=False, echo=lambda m: None)
    manifest = json.loads(open(result.manifest_path).read())
    assert manifest["model"]["precision"]["used"] == [expected]
    why = manifest["model"]["precision"]["why"][0]
    assert why.startswith(f"{expected}: auto: ") and because in why, why
    assert manifest["counts"]["scored"] == 48


def _with_an_openvino_int8_copy(model_dir, target):
  """The model as training made it before 2026-12-08: its int8 copy in
  OpenVINO's format (here its float32 copy's files, under the int8 copy's
  names: the same loading path) and the card's record of then."""
  from runtime.filesystems import sha256_of
  shutil.copytree(model_dir, target)
  shutil.rmtree(target / contract.INT8_COPY_DIR)
  (target / contract.INT8_COPY_DIR).mkdir()
  files = {}
  for old, new in ((contract.FLOAT32_MODEL_FILE, contract.INT8_OPENVINO_FILE),
                   (contract.FLOAT32_WEIGHTS_FILE,
                    contract.INT8_OPENVINO_WEIGHTS_FILE)):
    text = (target / contract.FLOAT32_COPY_DIR / old).read_bytes()
    if old.endswith(".xml"):
      text = text.replace(contract.FLOAT32_WEIGHTS_FILE.encode(),
                          contract.INT8_OPENVINO_WEIGHTS_FILE.encode())
    (target / contract.INT8_COPY_DIR / new).write_bytes(text)
    files[new] = sha256_of(str(target / contract.INT8_COPY_DIR / new))
  card = _card(target)
  card["int8"] = {
      "offered": True, "runtime": "openvino 2026.4.1",
      "quantizer": "nncf 3.4.0, post-training, transformer preset",
      "files_sha256": files,
      "calibration": {"split": "train", "reviews": 300, "seed": 42},
      "validation_accuracy": 0.6, "float32_validation_accuracy": 0.6,
      "max_accuracy_drop": 0.2}
  (target / contract.MODEL_CARD_FILE).write_text(json.dumps(card))
  return target


def test_a_model_with_the_openvino_int8_copy_of_before_still_scores(
    tiny_int8_model_dir, reviews_parquet, tmp_path, monkeypatch):
  """Its copy as it is: in int8 by OpenVINO where the CPU has VNNI, in
  float32 where it has not (8-bit weights saturate without it)."""
  from pipeline.run import run
  from runtime import hardware
  model = _with_an_openvino_int8_copy(tiny_int8_model_dir, tmp_path / "old")
  copy = contract.ModelCard.from_dict(_card(model)).copies["int8"]
  assert copy.engine == contract.OPENVINO and not copy.pays_without_vnni
  for name, flags, expected in (("vnni", ICE_LAKE_FLAGS, "int8"),
                                ("avx2", ZEN3_FLAGS, "float32")):
    monkeypatch.setattr(hardware, "cpu_flags", lambda *a, f=flags: frozenset(f))
    result = run([f"--input={reviews_parquet}", f"--model={model}",
                  f"--output={tmp_path / name / 'scores'}"],
                 save_main_session=False, echo=lambda m: None)
    manifest = json.loads(open(result.manifest_path).read())
    assert manifest["model"]["precision"]["used"] == [expected]
    assert "OpenVINO" in manifest["model"]["precision"]["why"][0]
    assert manifest["counts"]["scored"] == 48


def test_int8_asked_of_a_model_without_a_copy_is_a_usage_error(
    tiny_model_dir, reviews_parquet, tmp_path):
  result = _score("--input", reviews_parquet, "--model", tiny_model_dir,
                  "--output", tmp_path / "scores", "--precision", "int8")
  assert result.exit_code == 2, result.output
  assert "--precision int8" in result.output
  assert "no int8 copy" in result.output


def _optimize(model, data, *extra):
  from click.testing import CliRunner
  from reviewscore.cli import main
  return CliRunner().invoke(main, ["optimize", str(model), "--data",
                                   str(data), *extra])


def test_optimize_adds_the_copies_and_repairs_a_damaged_one(
    tiny_model_dir, tiny_training_data, imdb_dir, tmp_path):
  """Catches `optimize` guarding on other reviews than the model's own
  held-out ones, a card rewritten with anything else changed, and a
  damaged copy it cannot remake."""
  model = tmp_path / "model"
  shutil.copytree(tiny_model_dir, model)
  before = _card(model)
  assert before.get("int8") is None
  result = _optimize(model, tiny_training_data, "--int8-max-drop", "20")
  assert result.exit_code == 0, result.output
  assert "int8 copy offered" in result.output
  after = _card(model)
  assert after["int8"]["offered"] is True
  assert after["int8"]["max_accuracy_drop"] == pytest.approx(0.2)
  assert after["int8"]["compared_reviews"] == 40
  # float32 on the guard's reviews: training's own decisions there.
  assert after["int8"]["float32_accuracy"] == pytest.approx(
      before["metrics"]["validation"]["accuracy"])
  assert {k: v for k, v in after.items()
          if k not in ("int8", "float32_copy", "accuracy_by_precision")} == \
      {k: v for k, v in before.items()
       if k not in ("int8", "float32_copy", "accuracy_by_precision")}
  assert (model / contract.INT8_COPY_DIR / contract.INT8_ONNX_FILE).is_file()
  assert after["float32_copy"]["offered"] is True
  for name in contract.FLOAT32_FILES:
    assert (model / contract.FLOAT32_COPY_DIR / name).is_file()
  assert "float32 copy offered" in result.output
  # Damaged: remade, and scoring takes it again.
  int8_file = model / contract.INT8_COPY_DIR / contract.INT8_ONNX_FILE
  _damage(int8_file, "altered")
  from engines.model_dir import copy_problems
  assert list(copy_problems(str(model), contract.ModelCard.from_dict(
      _card(model)))) == ["int8"]
  repaired = _optimize(model, tiny_training_data, "--int8-max-drop", "20")
  assert repaired.exit_code == 0, repaired.output
  assert copy_problems(str(model), contract.ModelCard.from_dict(
      _card(model))) == {}
  # Other reviews than the model was trained on: refused, nothing changed.
  other = tmp_path / "other"
  other.mkdir()
  table = pq.read_table(imdb_dir / "train.parquet",
                        columns=["review_id", "text", "label"])
  import pyarrow as pa
  pq.write_table(pa.concat_tables([table.slice(200, 100),
                                   table.slice(12700, 100)]),
                 other / "train.parquet")
  repaired_card = _card(model)
  again = _optimize(model, other)
  assert again.exit_code == 1, again.output
  assert "not the ones the model was trained with" in again.output
  assert _card(model) == repaired_card


def _fail_at(step, monkeypatch):
  """Makes one step of making the copies raise."""
  from engines import onnx_classifier, onnx_export
  from engines import openvino_classifier as openvino
  from train.export import tokenizer_copy

  def crashing(*args, **kwargs):
    raise RuntimeError(f"crashed at {step}")
  target = {"version query": (onnx_classifier, "version"),
            "conversion": (onnx_export, "convert_signature"),
            "quantization": (onnx_export, "quantize"),
            "compile": (onnx_classifier, "Classifier"),
            "float32 conversion": (openvino, "convert_signature"),
            "float32 compile": (openvino, "Classifier"),
            "tokenizer": (tokenizer_copy, "_write_tokenizer")}.get(step)
  if target is not None:
    monkeypatch.setattr(*target, crashing)


@pytest.mark.parametrize("step", [
    "version query", "conversion", "quantization", "compile",
    "float32 conversion", "float32 compile", "tokenizer", "writing the card"])
def test_a_failure_at_any_step_leaves_the_model_as_it_was(
    tiny_int8_model_dir, tiny_training_data, tmp_path, monkeypatch, step):
  """`optimize` over a model with both copies: whatever step fails, the
  directory is byte for byte what it was (card, copies), with nothing
  staged or set aside left behind, and the command says what failed."""
  import os
  model = tmp_path / "model"
  shutil.copytree(tiny_int8_model_dir, model)

  def snapshot():
    return {str(p.relative_to(model)): p.read_bytes()
            for p in sorted(model.rglob("*")) if p.is_file()
            and "saved_model" not in p.parts and "checkpoints" not in p.parts}
  before = snapshot()
  _fail_at(step, monkeypatch)
  if step == "writing the card":
    real_replace = os.replace

    def failing_replace(src, dst):
      if str(dst).endswith(contract.MODEL_CARD_FILE):
        raise OSError("No space left on device")
      return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", failing_replace)
  result = _optimize(model, tiny_training_data, "--int8-max-drop", "20")
  assert result.exit_code == 1, result.output
  assert ("No space left" if step == "writing the card"
          else f"crashed at {step}") in result.output
  leftovers = [p.name for p in model.iterdir()
               if p.name.endswith((".partial", ".replaced"))]
  assert leftovers == [] and snapshot() == before


@pytest.mark.parametrize("cause", ["quantizer fails", "no [int8] extra"])
def test_training_without_an_int8_copy_keeps_a_complete_float32_model(
    tiny_encoder_dir, tiny_training_data, tmp_path, monkeypatch, cause):
  """Catches: a converter error, or a worker-style install without the
  quantizer's packages, failing a training run whose model is fine, a
  half-made int8 folder left behind, a card offering it, or no word on how
  to add it later."""
  from train.export import copies
  from train.loops.trainer import TrainSettings
  from train.run import train_and_export
  if cause == "quantizer fails":
    _fail_at("quantization", monkeypatch)
  else:
    monkeypatch.setattr(copies, "int8_tools_installed", lambda: False)
  lines = []
  out = tmp_path / "model"
  card = train_and_export(
      data_path=tiny_training_data, encoder=str(tiny_encoder_dir), out=out,
      settings=TrainSettings(batch_size=8, epochs=1, seq_length=64,
                             truncation="head", pooling="cls",
                             precision="float32", max_examples=200,
                             checkpoint_every_steps=1000),
      progress=lines.append, int8=True)
  warned = [line for line in lines if line.startswith("int8: no copy")]
  assert len(warned) == 1, lines
  if cause == "quantizer fails":
    assert "crashed at quantization" in warned[0]
    assert "scoring keeps float32" in warned[0]
  else:
    assert "pip install 'reviewscore[int8]'" in warned[0]
    assert "reviewscore optimize" in warned[0]
  assert not (out / contract.INT8_COPY_DIR).exists()
  assert not (out / (contract.INT8_COPY_DIR + ".partial")).exists()
  written = _card(out)
  assert written["model_fingerprint"] == card["model_fingerprint"]
  assert not (written.get("int8") or {}).get("offered")
  assert "int8" not in written["accuracy_by_precision"]
  assert written["float32_copy"]["offered"] is True
  assert (out / contract.SAVED_MODEL_DIR / contract.SAVED_MODEL_GRAPH).is_file()
  assert any(line.startswith("after training (") for line in lines), lines
