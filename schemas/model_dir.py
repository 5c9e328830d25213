"""The model directory: what `train` writes and `score`, `evaluate`,
`predict` and `report` read.

    DIR/saved_model/     SavedModel with the signatures below
    DIR/int8/            optional int8 copy of the float32 classify signature
                         (ONNX Runtime, 7-bit weights; OpenVINO in models made
                         before 2026-12-08), made after training, checked
                         like the rest
    DIR/float32/         optional float32 copy of that signature (OpenVINO,
                         converted as it is), for CPUs, checked like the rest
    DIR/tokenizer/       optional copy of the `tokenize` signature for
                         Hugging Face's `tokenizers` (no TensorFlow), offered
                         where it gives the same ids
    DIR/model_card.json  ModelCard: how to score with it, and where it came from

Plain Python (no TensorFlow, no Beam): the launcher of a scoring job checks a
card before anything heavy loads, and both halves of the project spell every
name of the contract through this module.
"""
import dataclasses
import json
from typing import Any, Dict, List, Optional

# The precisions a model computes in (its signatures and copies), and `auto`
# (each scoring worker chooses, `runtime.hardware`): declared once, here.
AUTO = "auto"
FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
FLOAT16 = "float16"
INT8 = "int8"

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

# The int8 copy: derived from the float32 classify signature, offered only
# where its accuracy holds (`Int8Copy`). Training makes it for ONNX Runtime:
# dynamic int8 with 7-bit weights, the same integer sums on every x86 CPU.
INT8_COPY_DIR = "int8"
INT8_ONNX_FILE = "classify_tokens_int8.onnx"
# What models made before 2026-12-08 carry: OpenVINO's format (NNCF, 8-bit
# weights, which saturate on CPUs without VNNI); scored as they are.
INT8_OPENVINO_FILE = "classify_tokens_int8.xml"  # graph; weights beside it
INT8_OPENVINO_WEIGHTS_FILE = "classify_tokens_int8.bin"
# How far below float32 an int8 copy's accuracy may fall and still be
# offered (a fraction: 0.002 is 0.2 points), on the same held-out reviews.
INT8_MAX_ACCURACY_DROP = 0.002
# Held-out reviews the guard compares int8 with float32 on, paired: 0.2
# points is 4 of 2,000 reviews (the validation split first, then labelled
# reviews that training did not use).
INT8_GUARD_REVIEWS = 2000

# The engines that compute a copy, and how people write their names.
OPENVINO = "openvino"
ONNXRUNTIME = "onnxruntime"
ENGINE_NAMES = {OPENVINO: "OpenVINO", ONNXRUNTIME: "ONNX Runtime",
                "tokenizers": "Hugging Face tokenizers"}

# The float32 copy: the same signature converted to OpenVINO as it is (no
# quantization), offered only where its outputs match TensorFlow's on
# validation reviews (`Float32Copy`); CPU workers compute float32 with it.
FLOAT32_COPY_DIR = "float32"
FLOAT32_MODEL_FILE = "classify_tokens_float32.xml"
FLOAT32_WEIGHTS_FILE = "classify_tokens_float32.bin"
FLOAT32_FILES = (FLOAT32_MODEL_FILE, FLOAT32_WEIGHTS_FILE)
# The most a float32 copy's probability may differ from TensorFlow's.
FLOAT32_MAX_PROBABILITY_DIFFERENCE = 1e-3

# The tokenizer copy: the `tokenize` signature's vocabulary and WordPiece as
# Hugging Face's `tokenizers` runs them (`TokenizerCopy`), so that a worker
# computing with a copy loads no TensorFlow; offered only where it gives the
# same ids as the signature on every review and probe it was compared on.
TOKENIZER = "tokenizer"  # its name among the copies
TOKENIZER_ENGINE = "tokenizers"
TOKENIZER_COPY_DIR = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"


@dataclasses.dataclass(frozen=True)
class DerivedCopy:
  """One of the model's copies: the engine that computes it, where its
  files are (relative to DIR) and what they hash to."""
  precision: str
  engine: str  # OPENVINO or ONNXRUNTIME
  folder: str
  model_file: str
  files_sha256: Dict[str, str]

  @property
  def pays_without_vnni(self) -> bool:
    """7-bit int8 weights (ONNX Runtime's copy) cannot saturate AVX2's
    16-bit pair sums: faster than float32 on every x86 CPU."""
    return self.precision == INT8 and self.engine == ONNXRUNTIME


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
  # The tokenizer copy (`TokenizerCopy.to_dict()`), offered or refused.
  tokenizer_copy: Optional[Dict[str, Any]] = None

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
    # The copies' records, read once here: a malformed one is the card's
    # error, said when it is loaded.
    self.int8_copy, self.fast_tokenizer  # noqa: B018

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
  def copies(self) -> Dict[str, DerivedCopy]:
    """precision -> the copy offered in it (int8, float32)."""
    copies = {}
    int8 = self.int8_copy
    if int8:
      copies[INT8] = DerivedCopy(INT8, int8.engine, INT8_COPY_DIR,
                                 int8.model_file, int8.files_sha256)
    record = self.float32_copy or {}
    if record.get("offered") and FLOAT32 in self.precisions:
      copies[FLOAT32] = DerivedCopy(FLOAT32, OPENVINO, FLOAT32_COPY_DIR,
                                    FLOAT32_MODEL_FILE,
                                    dict(record.get("files_sha256") or {}))
    return copies

  @property
  def fast_tokenizer(self) -> Optional["TokenizerCopy"]:
    """The tokenizer copy when the model offers one."""
    record = self.tokenizer_copy or {}
    if not record.get("offered"):
      return None
    return TokenizerCopy.from_dict(record)

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

    The int8 copy is no signature: it maps to its model file.
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
        return {INT8: copy.model_file}
      return {**{p: self.classify_signature(p) for p in self.precisions},
              INT8: copy.model_file}
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
  The guard: on `compared_reviews` held-out reviews (`compared_on` says
  which), int8's `accuracy` at most `max_accuracy_drop` below float32's on
  the same reviews; `decisions_differing` counts the reviews whose label
  the two disagree on. Cards of OpenVINO copies (before 2026-12-08) have the
  validation accuracies and calibration instead.
  """
  offered: bool
  runtime: str  # e.g. "onnxruntime 1.31.1"
  quantizer: str  # how the weights and activations were quantized
  files_sha256: Dict[str, str]
  calibration: Optional[Dict[str, Any]] = None  # static quantization only
  compared_reviews: int = 0
  compared_on: Optional[str] = None
  accuracy: Optional[float] = None
  float32_accuracy: Optional[float] = None
  decisions_differing: Optional[int] = None
  validation_accuracy: Optional[float] = None
  float32_validation_accuracy: Optional[float] = None
  max_accuracy_drop: float = INT8_MAX_ACCURACY_DROP
  reason: Optional[str] = None

  @property
  def engine(self) -> str:
    """The engine that computes it (the runtime's name)."""
    return self.runtime.split()[0] if self.runtime else ONNXRUNTIME

  @property
  def model_file(self) -> str:
    return INT8_ONNX_FILE if self.engine == ONNXRUNTIME else INT8_OPENVINO_FILE

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, record: Dict[str, Any]) -> "Int8Copy":
    return _record_of(cls, record, "int8")


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


@dataclasses.dataclass(frozen=True)
class TokenizerCopy:
  """The card's record of the tokenizer copy (`ModelCard.tokenizer_copy`):
  DIR/tokenizer/tokenizer.json (normalizer, pre-tokenizer, WordPiece) and
  the packing around it, which `engines.fast_tokenizer` applies: line
  breaks cleaned or not, lower-cased or not, [CLS] the first `head_tokens` wordpieces and the
  last `tail_tokens` [SEP]. Offered where, on `compared_reviews` held-out
  reviews and `compared_probes` texts made to find differences, every id is
  the `tokenize` signature's; `reason` says why not otherwise."""
  offered: bool
  runtime: str  # e.g. "tokenizers 0.23.3"
  files_sha256: Dict[str, str]
  head_tokens: int = 0
  tail_tokens: int = 0
  clean_line_breaks: bool = True
  lower_case: bool = True
  cls_id: int = 0
  sep_id: int = 0
  unk_id: int = 0
  compared_reviews: int = 0
  compared_probes: int = 0
  reason: Optional[str] = None

  @property
  def copy(self) -> DerivedCopy:
    return DerivedCopy(TOKENIZER, TOKENIZER_ENGINE, TOKENIZER_COPY_DIR,
                       TOKENIZER_FILE, self.files_sha256)

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, record: Dict[str, Any]) -> "TokenizerCopy":
    return _record_of(cls, record, "tokenizer_copy")


def _record_of(cls, record: Dict[str, Any], field: str):
  """A card's record of a copy as `cls`: keys this release does not know
  are left out; a missing or bad one is a ModelCardError naming `field`."""
  names = {f.name for f in dataclasses.fields(cls)}
  try:
    return cls(**{k: v for k, v in record.items() if k in names})
  except TypeError as e:
    raise ModelCardError(f"{field}: {e}") from None


def _strings(value) -> List[str]:
  if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
    raise TypeError("expected a list")
  return [str(v) for v in value]


_REQUIRED_TYPES = {
    "format_version": int, "model_name": str, "model_fingerprint": str,
    "class_names": _strings, "threshold": float, "seq_length": int,
    "serving_precision": str, "precisions": _strings, "signatures": _strings,
}
