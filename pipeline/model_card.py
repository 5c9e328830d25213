"""The model directory contract: `DIR/saved_model/` and `DIR/model_card.json`.

Checked in the launcher, before any data is read, so that a wrong `--model`
costs one clear line rather than a worker stack trace an hour into a job.
No TensorFlow here: the launcher of a Dataflow job need not load the model.
"""
import dataclasses
import json
import posixpath
from typing import Dict, List, Optional

from apache_beam.io.filesystems import FileSystems

from pipeline.filesystems import missing_filesystem

SAVED_MODEL_DIR = "saved_model"
MODEL_CARD_FILE = "model_card.json"
# Format versions of model_card.json this pipeline can score with.
SUPPORTED_FORMAT_VERSIONS = (1,)
_REQUIRED_KEYS = ("format_version", "model_name", "model_fingerprint",
                  "class_names", "threshold", "seq_length",
                  "serving_precision", "precisions", "signatures")
_NEEDED_SIGNATURES = ("tokenize", "classify_tokens")


class ModelError(Exception):
  """The model directory cannot be scored with: one line says why."""


@dataclasses.dataclass(frozen=True)
class ModelCard:
  model_dir: str
  model_name: str
  model_fingerprint: str
  class_names: List[str]
  threshold: float
  seq_length: int
  serving_precision: str
  precisions: List[str]
  signatures: List[str]
  format_version: int

  @property
  def saved_model_dir(self) -> str:
    return _join(self.model_dir, SAVED_MODEL_DIR)

  def classify_signature(self, precision: Optional[str] = None) -> str:
    """Signature name for a precision (None: the card's serving precision)."""
    precision = precision or self.serving_precision
    if precision not in self.precisions:
      raise ModelError(
          f"{self.model_dir}: precision {precision!r} was not exported "
          f"(the model has {', '.join(self.precisions)})")
    name = f"classify_tokens_{precision}"
    return name if name in self.signatures else "classify_tokens"

  def classify_signatures(self, precision: str = "auto") -> Dict[str, str]:
    """precision -> signature, for `precision` (checked) or all under auto."""
    if precision != "auto":
      return {precision: self.classify_signature(precision)}
    return {p: self.classify_signature(p) for p in self.precisions}


def _join(base: str, *parts: str) -> str:
  if "://" in base:
    return posixpath.join(base, *parts)
  import os
  return os.path.join(base, *parts)


def _read_bytes(path: str) -> bytes:
  with FileSystems.open(path) as f:
    return f.read()


def _check_saved_model(model_dir: str, signatures: List[str]) -> None:
  """The SavedModel's files are there and its graph proto parses.

  Parsing saved_model.pb with protobuf alone (no TensorFlow) catches a
  missing, truncated or foreign file and a model without the signatures the
  card promises; damaged variables would still fail on the worker, loudly.
  """
  saved_model = _join(model_dir, SAVED_MODEL_DIR)
  pb_path = _join(saved_model, "saved_model.pb")
  if not FileSystems.exists(pb_path):
    raise ModelError(f"{model_dir}: no SavedModel ({pb_path} is missing)")
  if not FileSystems.exists(_join(saved_model, "variables",
                                  "variables.index")):
    raise ModelError(f"{model_dir}: the SavedModel has no variables "
                     f"({saved_model}/variables/variables.index is missing)")
  data = _read_bytes(pb_path)
  try:
    from tensorflow.core.protobuf import saved_model_pb2
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(data)
    found = set()
    for meta_graph in proto.meta_graphs:
      found.update(meta_graph.signature_def.keys())
  except Exception as e:  # protobuf raises DecodeError and friends
    raise ModelError(f"{pb_path}: corrupt SavedModel ({type(e).__name__}: "
                     f"{e})") from None
  if not proto.meta_graphs:
    raise ModelError(f"{pb_path}: corrupt SavedModel (no graph in it)")
  missing = sorted(set(signatures) - found)
  if missing:
    raise ModelError(f"{pb_path}: the SavedModel lacks signatures "
                     f"{missing} that its model card lists")


def load_model_card(model_dir: str, *, check_saved_model: bool = True
                    ) -> ModelCard:
  """Reads and validates DIR/model_card.json (and DIR/saved_model)."""
  model_dir = str(model_dir).rstrip("/") or "/"
  unreachable = missing_filesystem(model_dir)
  if unreachable:
    raise ModelError(unreachable)
  card_path = _join(model_dir, MODEL_CARD_FILE)
  if not FileSystems.exists(card_path):
    if not FileSystems.exists(model_dir):
      raise ModelError(f"{model_dir}: no such model directory")
    raise ModelError(f"{model_dir}: no {MODEL_CARD_FILE} (not a finished "
                     "model directory from `reviewscore train`)")
  try:
    card = json.loads(_read_bytes(card_path).decode("utf-8"))
  except (ValueError, UnicodeDecodeError) as e:
    raise ModelError(f"{card_path}: not valid JSON ({e})") from None
  if not isinstance(card, dict):
    raise ModelError(f"{card_path}: expected a JSON object")
  missing = [k for k in _REQUIRED_KEYS if k not in card]
  if "format_version" in card and card["format_version"] not in \
      SUPPORTED_FORMAT_VERSIONS:
    raise ModelError(
        f"{card_path}: format_version {card['format_version']!r} is not "
        f"supported by this pipeline (supported: "
        f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); score it with "
        "the reviewscore release that trained it or retrain")
  if missing:
    raise ModelError(f"{card_path}: missing keys {missing}")
  absent = [s for s in _NEEDED_SIGNATURES if s not in card["signatures"]]
  if absent:
    raise ModelError(f"{card_path}: the model has no {absent} signature "
                     "(exported by an older trainer?)")
  if list(card["class_names"]) and len(card["class_names"]) != 2:
    raise ModelError(f"{card_path}: expected two class names, got "
                     f"{card['class_names']}")
  if check_saved_model:
    _check_saved_model(model_dir, list(card["signatures"]))
  return ModelCard(
      model_dir=model_dir, model_name=str(card["model_name"]),
      model_fingerprint=str(card["model_fingerprint"]),
      class_names=[str(n) for n in card["class_names"]],
      threshold=float(card["threshold"]), seq_length=int(card["seq_length"]),
      serving_precision=str(card["serving_precision"]),
      precisions=[str(p) for p in card["precisions"]],
      signatures=[str(s) for s in card["signatures"]],
      format_version=int(card["format_version"]))
