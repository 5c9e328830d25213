"""Bad options on every command: one usage line, exit code 2, no traceback."""
import pytest
from click.testing import CliRunner

from reviewscore.cli import main


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
  root = tmp_path_factory.mktemp("cli")
  (root / "model").mkdir()
  (root / "data.parquet").write_bytes(b"not used")
  return root


CASES = [
    ("unknown command", ["retrain"]),
    ("import-encoder: too many paths", ["import-encoder", "a", "b", "c"]),
    ("import-encoder: seq length out of range", ["import-encoder", "--seq-length", "4", "x"]),
    ("pretrain: no --encoder", ["pretrain", "--data", "{root}/data.parquet", "--out", "o"]),
    ("pretrain: steps 0", ["pretrain", "--data", "{root}/data.parquet", "--encoder", "e", "--out", "o", "--steps", "0"]),
    ("train: missing --data path", ["train", "--data", "{root}/nope", "--encoder", "e", "--out", "o"]),
    ("train: no --encoder", ["train", "--data", "{root}/data.parquet", "--out", "o"]),
    ("train: epochs 0", ["train", "--data", "{root}/data.parquet", "--encoder", "e", "--out", "o", "--epochs", "0"]),
    ("train: learning rate 0", ["train", "--data", "{root}/data.parquet", "--encoder", "e", "--out", "o", "--learning-rate", "0"]),
    ("train: head tokens beyond the sequence", ["train", "--data", "{root}/data.parquet", "--encoder", "e", "--out", "o", "--truncation", "head+tail", "--seq-length", "64", "--head-tokens", "100"]),
    ("evaluate: missing model", ["evaluate", "--model", "{root}/nope", "--data", "{root}/data.parquet"]),
    ("evaluate: a glob that matches nothing", ["evaluate", "--model", "{root}/model", "--data", "{root}/*.nothing"]),
    ("train: a glob that matches nothing", ["train", "--data", "{root}/*.nothing", "--encoder", "e", "--out", "o"]),
    ("evaluate: bad split", ["evaluate", "--model", "{root}/model", "--data", "{root}/data.parquet", "--split", "dev"]),
    ("evaluate: max examples 0", ["evaluate", "--model", "{root}/model", "--data", "{root}/data.parquet", "--max-examples", "0"]),
    ("evaluate: label map without rules", ["evaluate", "--model", "{root}/model", "--data", "{root}/data.parquet", "--label-map", "garbage"]),
    ("predict: no model", ["predict", "some text"]),
    ("predict: no texts", ["predict", "--model", "{root}/model"]),
    ("predict: an empty text", ["predict", "--model", "{root}/model", "fine", " "]),
    ("score: no --model", ["score", "--input", "x", "--output", "y"]),
    ("score: bad format", ["score", "--input", "x", "--model", "{root}/model", "--output", "y", "--format", "xml"]),
    ("download-imdb: not a sha256 digest", ["download-imdb", "{root}/d", "--sha256", "nothex"]),
    ("report: no --out", ["report", "scores/x"]),
    ("report: no prefix", ["report", "--out", "r"]),
]


@pytest.mark.parametrize("name, args", CASES, ids=[n for n, _ in CASES])
def test_bad_options_are_usage_errors(name, args, paths):
  args = [a.replace("{root}", str(paths)) for a in args]
  result = CliRunner().invoke(main, args, input="")
  assert result.exit_code == 2, (name, result.output)
  assert "Error:" in result.output
  assert isinstance(result.exception, SystemExit)


def test_every_command_is_listed_with_a_summary():
  result = CliRunner().invoke(main, ["--help"])
  assert result.exit_code == 0
  for command in ("download-imdb", "import-encoder", "pretrain", "train",
                  "evaluate", "predict", "score", "report"):
    line = next(l for l in result.output.splitlines()
                if l.strip().startswith(command + " "))
    assert len(line.split(None, 1)[1]) > 10
