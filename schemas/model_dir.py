"""The model directory: what `train` writes and `score`, `evaluate`,
`predict` and `report` read.

    DIR/saved_model/     SavedModel with the signatures below
    DIR/int8/            optional int8 copy of the float32 classify signature
                         (OpenVINO), made after training, checked like the rest
    DIR/float32/         optional float32 copy of that signature (OpenVINO,
                         converted as it is), for CPUs, checked like the rest
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
SAVED_MODEL_GRAPH = "saved_model.pb"
SAVED_MODEL_INDEX = "variables/variables.index"
CHECKED_FILES = (SAVED_MODEL_GRAPH, SAVED_MODEL_INDEX)

# The int8 copy: derived from the float32 classify signature, computed by
# OpenVINO, offered only where its validation accuracy holds (`Int8Copy`).
INT8 = "int8"
INT8_COPY_DIR = "int8"
INT8_MODEL_FILE = "classify_tokens_int8.xml"  # graph; weights beside it, .bin
INT8_WEIGHTS_FILE = "classify_tokens_int8.bin"
INT8_FILES = (INT8_MODEL_FILE, INT8_WEIGHTS_FILE)
# How far below float32 an int8 copy's validation accuracy may fall and still
# be offered (a fraction: 0.002 is 0.2 points).
INT8_MAX_ACCURACY_DROP = 0.002

# The float32 copy: the same signature converted to OpenVINO as it is (no
# quantization), offered only where its outputs match TensorFlow's on
# validation reviews (`Float32Copy`); CPU workers compute float32 with it.
FLOAT32 = "float32"
FLOAT32_COPY_DIR = "float32"
FLOAT32_MODEL_FILE = "classify_tokens_float32.xml"
FLOAT32_WEIGHTS_FILE = "classify_tokens_float32.bin"
FLOAT32_FILES = (FLOAT32_MODEL_FILE, FLOAT32_WEIGHTS_FILE)
# The most a float32 copy's probability may differ from TensorFlow's.
FLOAT32_MAX_PROBABILITY_DIFFERENCE = 1e-3


@dataclasses.dataclass(frozen=True)
class OpenVinoCopy:
  """Where a copy's files are (relative to DIR) and what they hash to."""
  precision: str
  folder: str
  model_file: str
  files_sha256: Dict[str, str]


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
  # The int8 copy (`Int8Copy.to_dict()`), offered or refused with its reason.
  int8: Optional[Dict[str, Any]] = None
  # The float32 copy (`Float32Copy.to_dict()`), offered or refused.
  float32_copy: Optional[Dict[str, Any]] = None
  # precision -> {"runtime", "validation_accuracy", "test_accuracy"}: what
  # each way of computing the model scores, measured after export.
  accuracy_by_precision: Optional[Dict[str, Dict[str, Any]]] = None

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

  @property
  def int8_copy(self) -> Optional["Int8Copy"]:
    """The int8 copy when the model offers one."""
    if not self.int8 or not self.int8.get("offered"):
      return None
    return Int8Copy.from_dict(self.int8)

  @property
  def openvino_copies(self) -> Dict[str, OpenVinoCopy]:
    """precision -> the OpenVINO copy offered in it (int8, float32)."""
    copies = {}
    if self.int8_copy:
      copies[INT8] = OpenVinoCopy(INT8, INT8_COPY_DIR, INT8_MODEL_FILE,
                                  self.int8_copy.files_sha256)
    record = self.float32_copy or {}
    if record.get("offered") and FLOAT32 in self.precisions:
      copies[FLOAT32] = OpenVinoCopy(FLOAT32, FLOAT32_COPY_DIR,
                                     FLOAT32_MODEL_FILE,
                                     dict(record.get("files_sha256") or {}))
    return copies

  @property
  def scoring_precisions(self) -> List[str]:
    """Every precision scoring can compute this model in."""
    return sorted(self.precisions + ([INT8] if self.int8_copy else []))

  def classify_signature(self, precision: Optional[str] = None) -> str:
    """Signature computing in `precision` (None: the serving precision)."""
    precision = precision or self.serving_precision
    if precision not in self.precisions:
      raise ModelCardError(f"precision {precision!r} was not exported (the "
                           f"model has {', '.join(self.precisions)})")
    name = classify_signature_for(precision)
    return name if name in self.signatures else CLASSIFY_SIGNATURE

  def classify_signatures(self, precision: str = "auto") -> Dict[str, str]:
    """precision -> signature, for `precision` (checked) or all under auto.

    The int8 copy is no signature: it maps to its file, `INT8_MODEL_FILE`.
    """
    if precision == INT8 or (precision == "auto" and self.int8_copy):
      copy = self.int8_copy
      if copy is None:
        raise ModelCardError(
            "precision 'int8' is not offered by this model (" + (
                self.int8.get("reason") if self.int8 else
                "it carries no int8 copy: `reviewscore optimize` makes one")
            + f"; the model has {', '.join(self.precisions)})")
      if precision == INT8:
        return {INT8: INT8_MODEL_FILE}
      return {**{p: self.classify_signature(p) for p in self.precisions},
              INT8: INT8_MODEL_FILE}
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


@dataclasses.dataclass(frozen=True)
class Int8Copy:
  """The card's record of an int8 copy (`ModelCard.int8`).

  `offered` is False where the guard refused it (`reason` says why; its files
  are then gone). `files_sha256` is checked before a worker scores with it.
  """
  offered: bool
  runtime: str  # e.g. "openvino 2026.4.1"
  quantizer: str  # e.g. "nncf 3.4.0, post-training, transformer preset"
  files_sha256: Dict[str, str]
  calibration: Dict[str, Any]  # split, reviews, their sha256
  validation_accuracy: Optional[float] = None
  float32_validation_accuracy: Optional[float] = None
  max_accuracy_drop: float = INT8_MAX_ACCURACY_DROP
  reason: Optional[str] = None

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, record: Dict[str, Any]) -> "Int8Copy":
    names = {f.name for f in dataclasses.fields(cls)}
    try:
      return cls(**{k: v for k, v in record.items() if k in names})
    except TypeError as e:
      raise ModelCardError(f"int8: {e}") from None


@dataclasses.dataclass(frozen=True)
class Float32Copy:
  """The card's record of the float32 copy (`ModelCard.float32_copy`).

  Offered where, on `compared_reviews` validation reviews, its probabilities
  are within `max_probability_difference` of TensorFlow's; `reason` says
  why not otherwise (its files are then gone).
  """
  offered: bool
  runtime: str  # e.g. "openvino 2026.4.1"
  files_sha256: Dict[str, str]
  compared_reviews: int = 0
  largest_probability_difference: Optional[float] = None
  max_probability_difference: float = FLOAT32_MAX_PROBABILITY_DIFFERENCE
  reason: Optional[str] = None

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


def _strings(value) -> List[str]:
  if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
    raise TypeError("expected a list")
  return [str(v) for v in value]


_REQUIRED_TYPES = {
    "format_version": int, "model_name": str, "model_fingerprint": str,
    "class_names": _strings, "threshold": float, "seq_length": int,
    "serving_precision": str, "precisions": _strings, "signatures": _strings,
}
