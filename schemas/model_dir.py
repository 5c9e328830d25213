"""The model directory: what `train` writes and `score`, `evaluate`,
`predict` and `report` read.

    DIR/saved_model/     SavedModel with the signatures below
    DIR/model_card.json  ModelCard: how to score with it, and where it came from

Plain Python (no TensorFlow, no Beam): the launcher of a scoring job checks a
card before anything heavy loads, and both halves of the project spell every
name of the contract through this module.
"""
import dataclasses
import json
from typing import Any, Dict, List, Optional

SAVED_MODEL_DIR = "saved_model"
MODEL_CARD_FILE = "model_card.json"
# The version training writes, and the versions scoring accepts.
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)

# Signatures of DIR/saved_model.
SERVING_SIGNATURE = "serving_default"  # raw strings in
TOKENIZE_SIGNATURE = "tokenize"  # raw strings -> token ids, token counts
CLASSIFY_SIGNATURE = "classify_tokens"  # token ids -> outputs, serving precision
REQUIRED_SIGNATURES = (TOKENIZE_SIGNATURE, CLASSIFY_SIGNATURE)
# Files of DIR/saved_model whose sha256 the card records and scoring checks:
# the graph and the weights' index (which holds a CRC32C of every weight
# tensor, checked by TensorFlow when it reads them).
CHECKED_FILES = ("saved_model.pb", "variables/variables.index")

# Argument and output names of those signatures.
TEXT_INPUT = "text"
TOKEN_IDS = "input_word_ids"  # int32 [batch, length <= seq_length], 0-padded
TOKEN_MASK = "input_mask"  # int32 [batch, length], 1 on real tokens
NUM_TOKENS = "num_tokens"  # int32 [batch]
OUTPUT_LOGITS = "logits"
# Two classes: the positive class's probability; more: the likeliest one's.
OUTPUT_PROBABILITY = "probability"  # float32 [batch]
OUTPUT_PROBABILITIES = "probabilities"  # float32 [batch, classes], 3+ classes
OUTPUT_LABEL_ID = "label_id"  # int32 [batch]: threshold applied, or argmax


def classify_signature_for(precision: str) -> str:
  """Name of the classify signature that computes in `precision`."""
  return f"{CLASSIFY_SIGNATURE}_{precision}"


class ModelCardError(ValueError):
  """A model card is missing a field, has a bad one, or is too new."""


@dataclasses.dataclass(frozen=True)
class ModelCard:
  """Contents of model_card.json.

  The fields up to `signatures` are what scoring needs; the rest record how
  the model was made (free-form dictionaries, for people and `report`).
  """
  format_version: int
  model_name: str
  model_fingerprint: str
  class_names: List[str]
  threshold: Optional[float]  # two classes only
  seq_length: int
  serving_precision: str
  precisions: List[str]
  signatures: List[str]
  # How a label column became the two classes (`neg:<=2,pos:>=4`), so that
  # evaluating on more of the same data maps it the same way.
  label_map: Optional[str] = None
  # sha256 of each of CHECKED_FILES: weights replaced or altered after
  # training are refused before a job starts.
  files_sha256: Optional[Dict[str, str]] = None
  created_at: Optional[str] = None
  truncation: Optional[Dict[str, Any]] = None
  pooling: Optional[str] = None
  encoder: Optional[Dict[str, Any]] = None
  hyperparameters: Optional[Dict[str, Any]] = None
  training: Optional[Dict[str, Any]] = None
  metrics: Optional[Dict[str, Any]] = None
  data: Optional[Dict[str, Any]] = None
  reload_check_max_difference: Optional[float] = None
  versions: Optional[Dict[str, str]] = None

  def __post_init__(self):
    if len(self.class_names) < 2 or len(set(self.class_names)) != len(
        self.class_names):
      raise ModelCardError(f"class_names: expected two or more different "
                           f"class names, got {self.class_names}")
    if self.binary and not (self.threshold is not None and
                            0.0 <= self.threshold <= 1.0):
      raise ModelCardError(f"threshold: {self.threshold} is not in [0, 1]")
    if not self.binary and self.threshold is not None:
      raise ModelCardError("threshold: a model over more than two classes "
                           "has none (the likeliest class wins)")
    if self.serving_precision not in self.precisions:
      raise ModelCardError(f"serving_precision: {self.serving_precision!r} "
                           f"is not among precisions {self.precisions}")
    absent = [s for s in REQUIRED_SIGNATURES if s not in self.signatures]
    if absent:
      raise ModelCardError(f"signatures: the model has no {absent} signature "
                           "(exported by an older trainer?)")

  @property
  def binary(self) -> bool:
    return len(self.class_names) == 2

  def classify_signature(self, precision: Optional[str] = None) -> str:
    """Signature computing in `precision` (None: the serving precision)."""
    precision = precision or self.serving_precision
    if precision not in self.precisions:
      raise ModelCardError(f"precision {precision!r} was not exported (the "
                           f"model has {', '.join(self.precisions)})")
    name = classify_signature_for(precision)
    return name if name in self.signatures else CLASSIFY_SIGNATURE

  def classify_signatures(self, precision: str = "auto") -> Dict[str, str]:
    """precision -> signature, for `precision` (checked) or all under auto."""
    if precision != "auto":
      return {precision: self.classify_signature(precision)}
    return {p: self.classify_signature(p) for p in self.precisions}

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, default=str)

  @classmethod
  def from_dict(cls, card: Any) -> "ModelCard":
    """Validates a parsed card; ModelCardError names the bad field."""
    if not isinstance(card, dict):
      raise ModelCardError("expected a JSON object")
    version = card.get("format_version")
    if version is not None and version not in SUPPORTED_FORMAT_VERSIONS:
      raise ModelCardError(
          f"format_version {version!r} is not supported by this release "
          f"(supported: {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); "
          "score it with the reviewscore release that trained it or retrain")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING]
    missing = [name for name in required if name not in card]
    if missing:
      raise ModelCardError(f"missing keys {missing}")
    values = {}
    for name in required:
      try:
        values[name] = (None if card[name] is None and name == "threshold"
                        else _REQUIRED_TYPES[name](card[name]))
      except (TypeError, ValueError):
        raise ModelCardError(f"{name}: bad value {card[name]!r}") from None
    values.update({name: card[name] for name in fields
                   if name not in required and name in card})
    return cls(**values)

  @classmethod
  def from_json(cls, text: str) -> "ModelCard":
    try:
      card = json.loads(text)
    except ValueError as e:
      raise ModelCardError(f"not valid JSON ({e})") from None
    return cls.from_dict(card)


def _strings(value) -> List[str]:
  if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
    raise TypeError("expected a list")
  return [str(v) for v in value]


_REQUIRED_TYPES = {
    "format_version": int, "model_name": str, "model_fingerprint": str,
    "class_names": _strings, "threshold": float, "seq_length": int,
    "serving_precision": str, "precisions": _strings, "signatures": _strings,
}
