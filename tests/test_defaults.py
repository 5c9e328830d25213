"""Fast and good by default: precision from the hardware, pooling from the
encoder, the best recipe as defaults, a quick preset, quiet commands, and
`evaluate` on any labelled input.

Hardware-dependent choices are tested by forcing each branch (the CPU flags
are injected), so every test means the same on every machine.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reviewscore.cli import main
from runtime import hardware
from train.settings import TrainSettings, resolve_auto

NATIVE = frozenset({"avx512f", "avx512_bf16"})
NOT_NATIVE = frozenset({"avx2", "avx512f"})


def test_precision_choice_follows_the_hardware_and_the_model():
  """Catches: bfloat16 chosen on CPUs that emulate it, on GPUs, or for a
  model without a bfloat16 copy; an explicit choice overridden."""
  both = ("float32", "bfloat16")
  assert hardware.choose_precision("auto", available=both, flags=NATIVE)[0] \
      == "bfloat16"
  assert hardware.choose_precision("auto", available=both,
                                   flags={"amx_bf16"})[0] == "bfloat16"
  assert hardware.choose_precision("auto", available=both,
                                   flags=NOT_NATIVE)[0] == "float32"
  assert hardware.choose_precision("auto", available=["float32"],
                                   flags=NATIVE)[0] == "float32"
  assert hardware.choose_precision("auto", available=both, flags=NATIVE,
                                   has_gpu=True)[0] == "float32"
  assert hardware.choose_precision("bfloat16", available=both,
                                   flags=NOT_NATIVE)[0] == "bfloat16"
  # A model exported in one precision only (a TF Hub encoder's) is scored
  # in it, whatever the hardware would prefer.
  assert hardware.choose_precision("auto", available=["bfloat16"],
                                   flags=NOT_NATIVE)[0] == "bfloat16"
  assert hardware.choose_precision("auto", available=["float16"],
                                   has_gpu=True)[0] == "float16"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
  """Catches: a parser that misses the flags line or crashes without it."""
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                     "processor\t: 1\nflags\t\t: fpu avx512f avx512_bf16\n")
  assert hardware.cpu_flags(str(cpuinfo)) == {"fpu", "avx512f", "avx512_bf16"}
  assert hardware.cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_defaults_are_the_best_measured_recipe():
  """Catches: a default drifting from the recipe docs/accuracy.md measured
  (512 wordpieces head+tail, 128 head, 5e-5, batch 32, two epochs)."""
  resolved, why = resolve_auto(TrainSettings(), encoder_pooling="mean",
                               has_gpu=False, cpu_flags=NATIVE)
  assert (resolved.seq_length, resolved.truncation, resolved.head_tokens,
          resolved.learning_rate, resolved.batch_size, resolved.epochs,
          resolved.pooling, resolved.precision) == (
              512, "head+tail", 128, 5e-5, 32, 2, "mean", "bfloat16")
  assert "native" in why
  on_old_cpu, _ = resolve_auto(TrainSettings(), encoder_pooling="cls",
                               has_gpu=False, cpu_flags=NOT_NATIVE)
  assert (on_old_cpu.precision, on_old_cpu.pooling) == ("float32", "cls")
  explicit, _ = resolve_auto(TrainSettings(pooling="cls", precision="float32",
                                           seq_length=64),
                             encoder_pooling="mean", has_gpu=False,
                             cpu_flags=NATIVE)
  assert (explicit.pooling, explicit.precision, explicit.head_tokens) == (
      "cls", "float32", 16)


def test_import_records_the_pooling_the_checkpoint_was_trained_for(
    tiny_checkpoint_dir, tmp_path):
  """Catches: sentence-transformers checkpoints (MiniLM) pooled by [CLS]
  by default, or plain BERTs pooled by the mean."""
  from train.encoders.source import resolve_encoder
  from train.encoders.hf_checkpoint import open_checkpoint, open_minilm
  from train.encoders.importer import import_encoder
  assert open_checkpoint(tiny_checkpoint_dir).pooling == "cls"
  assert open_minilm().pooling == "mean"
  (tiny_checkpoint_dir / "modules.json").write_text(json.dumps([
      {"idx": 0, "name": "0", "path": "",
       "type": "sentence_transformers.models.Transformer"},
      {"idx": 1, "name": "1", "path": "1_Pooling",
       "type": "sentence_transformers.models.Pooling"}]))
  (tiny_checkpoint_dir / "1_Pooling").mkdir()
  (tiny_checkpoint_dir / "1_Pooling" / "config.json").write_text(json.dumps(
      {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
  checkpoint = open_checkpoint(tiny_checkpoint_dir)
  assert checkpoint.pooling == "mean"
  out = import_encoder(checkpoint, tmp_path / "enc", seq_length=32)
  assert resolve_encoder(str(out)).default_pooling == "mean"


def _small_labelled(imdb_dir, path, n=60):
  table = pq.read_table(imdb_dir / "test.parquet",
                        columns=["review_id", "text", "label"])
  rows = pa.concat_tables([table.slice(0, n // 2), table.slice(12500, n // 2)])
  pq.write_table(rows, path)
  return rows


def test_auto_training_without_native_bfloat16_exports_a_bfloat16_copy(
    tiny_encoder_dir, imdb_dir, tmp_path, monkeypatch):
  """Catches: a model trained on a machine without native bfloat16 that
  cannot be scored in bfloat16 by a better worker, or trained in emulated
  bfloat16 under auto."""
  from train.run import train_and_export
  monkeypatch.setattr(hardware, "cpu_flags", lambda *a: NOT_NATIVE)
  data = tmp_path / "data"
  data.mkdir()
  _small_labelled(imdb_dir, data / "train.parquet", n=80)
  card = train_and_export(
      data_path=data, encoder=str(tiny_encoder_dir), out=tmp_path / "m",
      settings=TrainSettings(batch_size=8, epochs=1, seq_length=32),
      progress=lambda m: None)
  assert card["hyperparameters"]["precision"] == "float32"
  assert card["hyperparameters"]["pooling"] == "cls"  # the tiny BERT's
  assert card["hyperparameters"]["head_tokens"] == 8
  assert card["precisions"] == ["bfloat16", "float32"]
  assert "classify_tokens_bfloat16" in card["signatures"]


@pytest.mark.slow
def test_quick_preset_fills_in_under_explicit_options(
    tiny_encoder_dir, imdb_dir, tmp_path):
  """Catches: a preset that overrides what the user typed, or that is not
  applied at all."""
  from train.presets import PRESETS
  data = tmp_path / "data"
  data.mkdir()
  _small_labelled(imdb_dir, data / "train.parquet", n=40)
  _small_labelled(imdb_dir, data / "test.parquet", n=20)
  result = CliRunner().invoke(main, [
      "train", "--data", str(data), "--encoder", str(tiny_encoder_dir),
      "--out", str(tmp_path / "m"), "--preset", "quick", "--seq-length", "64",
      "--precision", "float32", "--batch-size", "8"])
  assert result.exit_code == 0, result.output
  card = json.loads((tmp_path / "m" / "model_card.json").read_text())
  settings = card["hyperparameters"]
  quick = PRESETS["quick"]
  assert settings["seq_length"] == 64 and settings["batch_size"] == 8
  assert settings["learning_rate"] == quick["learning_rate"] != \
      TrainSettings().learning_rate
  assert settings["epochs"] == quick["epochs"] != TrainSettings().epochs
  assert settings["max_examples"] == quick["max_examples"]


def _has_gpu() -> bool:
  import tensorflow as tf
  return bool(tf.config.list_physical_devices("GPU"))


def _has_gcs() -> bool:
  """Beam's GCS filesystem loads: the `[gcp]` extra is installed."""
  try:
    import apache_beam.io.gcp.gcsfilesystem  # noqa: F401
  except ImportError:
    return False
  return True


@pytest.mark.parametrize("flags, expected", [
    pytest.param(NATIVE, "bfloat16", marks=pytest.mark.skipif(
        _has_gpu(), reason="this host has a GPU, where auto rightly scores "
        "in float32 whatever the CPU offers")),
    (NOT_NATIVE, "float32")])
def test_scoring_precision_is_chosen_by_the_worker(
    flags, expected, tiny_model_dir, imdb_dir, tmp_path, monkeypatch):
  """Catches: auto following the card instead of the hardware, a choice the
  manifest does not record, or a bfloat16 label on float32 scores."""
  from pipeline.run import run
  data = tmp_path / "in.parquet"
  _small_labelled(imdb_dir, data, n=40)

  def scores(name, *extra):
    result = run([f"--input={data}", f"--model={tiny_model_dir}",
                  f"--output={tmp_path / name}", *extra],
                 save_main_session=False, echo=lambda m: None)
    manifest = json.loads(open(result.manifest_path).read())
    table = pq.read_table(result.score_files).sort_by("review_id")
    return manifest, table["score"].to_numpy()

  _, float32 = scores("f32", "--precision=float32")
  monkeypatch.setattr(hardware, "cpu_flags", lambda *a: flags)
  manifest, auto = scores("auto")
  precision = manifest["model"]["precision"]
  assert precision["requested"] == "auto" and precision["used"] == [expected]
  assert len(precision["why"]) == 1
  assert precision["why"][0].startswith(f"{expected}: auto: ")
  difference = np.abs(auto - float32).max()
  if expected == "float32":
    assert difference <= 1e-6
  else:  # really the bfloat16 graph: close, but not bit-equal
    assert 0 < difference < 0.05


def test_evaluate_takes_a_labelled_file_or_tree_whole(tiny_model_dir,
                                                      imdb_dir, tmp_path):
  """Catches: `evaluate --data file.parquet` refused for lack of a test
  split, or a pos/neg tree read as a data folder."""
  rows = _small_labelled(imdb_dir, tmp_path / "labelled.parquet", n=30)
  result = CliRunner().invoke(main, [
      "evaluate", "--model", str(tiny_model_dir), "--data",
      str(tmp_path / "labelled.parquet"), "--out", str(tmp_path / "e1")])
  assert result.exit_code == 0, result.output
  metrics = json.loads((tmp_path / "e1" / "metrics.json").read_text())
  assert metrics["count"] == rows.num_rows == 30
  tree = tmp_path / "tree"
  for row in rows.to_pylist()[:6] + rows.to_pylist()[-6:]:
    folder = tree / ("pos" if row["label"] else "neg")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{row['review_id'].split('/')[-1]}.txt").write_text(row["text"])
  result = CliRunner().invoke(main, [
      "evaluate", "--model", str(tiny_model_dir), "--data", str(tree),
      "--out", str(tmp_path / "e2")])
  assert result.exit_code == 0, result.output
  assert json.loads((tmp_path / "e2" / "metrics.json").read_text())[
      "count"] == 12


def test_score_command_is_quiet_and_works_as_users_run_it(
    tiny_model_dir, imdb_dir, tmp_path):
  """Catches: TensorFlow's C++ start-up lines, absl's or Beam's warnings on
  a user's terminal, and a broken `reviewscore score` entry point."""
  data = tmp_path / "in.parquet"
  _small_labelled(imdb_dir, data, n=20)
  env = {k: v for k, v in os.environ.items() if k not in (
      "REVIEWSCORE_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
  done = subprocess.run(
      [sys.executable, "-m", "reviewscore.cli", "score", "--input", str(data),
       "--model", str(tiny_model_dir), "--output", str(tmp_path / "s")],
      capture_output=True, text=True, timeout=300, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "scored 20, dead-lettered 0 of 20 read" in done.stdout
  ours = ("scoring ", "worker: ", "progress: ", "read ", "scores: ",
          "dead letters: ", "manifest: ")
  foreign = [line for line in done.stderr.splitlines()
             if line.strip() and not line.startswith(ours)]
  assert foreign == [], foreign
  # The first scored review is announced once (the start-up benchmark
  # times the process to that line).
  firsts = [line for line in done.stderr.splitlines()
            if line.startswith("progress: first review scored")]
  assert len(firsts) == 1, done.stderr[-2000:]


def test_a_bad_beam_flag_is_a_usage_error_without_traceback(
    tiny_model_dir, imdb_dir, tmp_path):
  """Catches: an unknown --runner ending in a traceback, or in exit 1 as if
  the input were bad, or leaving output behind."""
  data = tmp_path / "in.parquet"
  _small_labelled(imdb_dir, data, n=4)
  done = subprocess.run(
      [sys.executable, "-m", "reviewscore.cli", "score", "--input", str(data),
       "--model", str(tiny_model_dir), "--output", str(tmp_path / "out" / "s"),
       "--runner=Nope"], capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "Traceback" not in done.stderr
  assert "Nope" in done.stderr.splitlines()[-1]
  assert not (tmp_path / "out").exists() or not any(
      (tmp_path / "out").iterdir())


# Run in a fresh process with the given modules made absent (an import
# finder raises ModuleNotFoundError for them, as a missing package does),
# then `reviewscore score` once per path option, through click's runner.
_WITHOUT_EXTRA = """
import json, sys
blocked = tuple(sys.argv[1].split(","))
class Absent:
  def find_spec(self, name, path=None, target=None):
    if any(name == b or name.startswith(b + ".") for b in blocked):
      raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
from click.testing import CliRunner
from reviewscore.cli import main
results = []
for args in json.loads(sys.argv[2]):
  result = CliRunner().invoke(main, ["score", *args])
  results.append([result.exit_code, result.output,
                  isinstance(result.exception, SystemExit)])
print(json.dumps(results))
"""


@pytest.mark.parametrize("absent, scheme, extra", [
    ("google.cloud.storage", "gs", "gcp"), ("boto3", "s3", "aws")])
def test_cloud_paths_keep_their_scheme_without_the_extra(
    absent, scheme, extra, tiny_model_dir, imdb_dir, tmp_path):
  """The row "a gs:// or s3:// path without Beam's support for it
  installed", held on every host (the extras may be installed here): the
  extra's package is made absent in the scoring process. Each path option
  in turn is the bucket's; each is refused in one line that names the URL
  as given and the extra (exit 1; 2 for --output, a usage error), before
  anything is written. Catches: a
  mangled URL (gs:/bucket), a traceback, Beam's own words ("Missing boto3
  requirement", which Beam's S3 filesystem says only at its first
  operation, after a pipeline started), output left behind."""
  data = tmp_path / "in.parquet"
  _small_labelled(imdb_dir, data, n=4)
  url = f"{scheme}://bucket/x/y"
  local = {"--input": str(data), "--model": str(tiny_model_dir),
           "--output": str(tmp_path / "out" / "s")}
  runs = [[a for pair in {**local, option: url}.items() for a in pair]
          for option in local]
  done = subprocess.run(
      [sys.executable, "-c", _WITHOUT_EXTRA, absent, json.dumps(runs)],
      capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads(done.stdout.strip().splitlines()[-1])
  # The model and the input are refused as such (exit 1); the output as a
  # usage error (exit 2), click's usage lines above its one Error line.
  exits = {"--input": 1, "--model": 1, "--output": 2}
  for option, (exit_code, output, clean_exit) in zip(local, results,
                                                      strict=True):
    assert exit_code == exits[option] and clean_exit, (option, output)
    errors = [line for line in output.splitlines() if "rror" in line]
    assert errors == [
        f"Error: {url}: no filesystem for {scheme}:// in this environment "
        f"(pip install 'reviewscore[{extra}]')"], (option, output)
    assert "Traceback" not in output and len(output.splitlines()) < 5
  assert not (tmp_path / "out").exists()


@pytest.mark.skipif(_has_gcs(), reason="the [gcp] extra is installed here: "
                    "gs:// paths are Beam's to open (test_cloud_paths_keep_"
                    "their_scheme_without_the_extra holds this row on every "
                    "host)")
def test_cloud_paths_reach_beam_unchanged(tmp_path):
  """Catches: a path option that mangles gs://bucket into gs:/bucket, and a
  missing cloud extra ending in a traceback instead of naming the extra.
  No network: skipped where the Google Cloud filesystem is installed."""
  result = CliRunner().invoke(main, [
      "score", "--input", "gs://bucket/reviews/*.parquet", "--model",
      "gs://bucket/models/m1", "--output", str(tmp_path / "s")])
  assert result.exit_code == 1, result.output
  assert isinstance(result.exception, SystemExit)
  assert "gs://bucket/models/m1:" in result.output
  assert "reviewscore[gcp]" in result.output
