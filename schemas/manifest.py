"""The run manifest: `PREFIX-manifest.json`, written last by a scoring run.

Scoring builds it; reruns (`--since`), `report` and self-training
(`train --pseudo-labels`) read it through `read_manifest`. Every key of the
file is spelled here and nowhere else: the rest of the code reads typed
fields.

Manifests written before the format carried a version read as version 1
with the fields they lack left empty (None or an empty collection), which
is how readers tell "not recorded" from a value.
"""
import dataclasses
import json
from typing import Any, Dict, List, Optional

from schemas import outputs

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)


class ManifestError(ValueError):
  """A manifest that is missing, not JSON, or not a scoring run's."""


@dataclasses.dataclass(frozen=True)
class FileState:
  """One input file as a run saw it: a rerun rescores it when it changed."""
  size: int
  modified: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Precision:
  requested: str
  used: List[str] = dataclasses.field(default_factory=list)
  why: List[str] = dataclasses.field(default_factory=list)  # "int8: <reason>"


@dataclasses.dataclass(frozen=True)
class ModelUsed:
  """The model a run scored with, and what makes its scores comparable."""
  dir: str
  name: str
  fingerprint: str
  precision: Precision
  threshold: Optional[float] = None
  # Same weights, other packing: other scores (reruns compare it).
  tokenization: Optional[Dict[str, Any]] = None

  def differs_from(self, other: "ModelUsed") -> Optional[str]:
    """Why scores of `other` cannot stand beside this one's (None if they
    can): another fingerprint, decision threshold or tokenization."""
    if self.fingerprint != other.fingerprint:
      return "scored with another model"
    for field, what in (("threshold", "decision threshold"),
                        ("tokenization", "tokenization")):
      then, now = getattr(other, field), getattr(self, field)
      if then is not None and then != now:
        return f"scored with another {what} ({then} then, {now} now)"
    return None


@dataclasses.dataclass(frozen=True)
class Reading:
  """How a run read its input: a rerun must read it the same way for its
  rows to join the earlier runs' table."""
  format: str
  text_column: str
  id_column: str
  carried: List[List[str]] = dataclasses.field(default_factory=list)
  positional_ids: bool = False
  max_review_bytes: Optional[int] = None

  def differences(self, earlier: "Reading") -> List[str]:
    """'what: then, now' for each way `earlier` read otherwise; settings an
    older manifest did not record (None) are not compared."""
    found = []
    for field in dataclasses.fields(self):
      then, now = getattr(earlier, field.name), getattr(self, field.name)
      if then is not None and then != now:
        found.append(f"{field.name}: {then} then, {now} now")
    return found


@dataclasses.dataclass(frozen=True)
class Counts:
  read: int
  scored: int
  dead_lettered: int
  dead_lettered_by_reason: Dict[str, int] = dataclasses.field(
      default_factory=dict)


@dataclasses.dataclass(frozen=True)
class IncrementRecord:
  """What a rerun (`--since`) scored of its input, against the runs before."""
  since: str
  new_files: int
  changed_files: int
  unchanged_files: int
  vanished_files: int
  earlier_rows_replaced: int = 0


@dataclasses.dataclass(frozen=True)
class RunManifest:
  run_id: str
  input: str
  reading: Reading
  model: ModelUsed
  batching: Dict[str, Any]
  # The file states the output covers (a rerun's: the union's).
  input_files: Optional[Dict[str, FileState]]
  extends: List[str] = dataclasses.field(default_factory=list)
  increment: Optional[IncrementRecord] = None
  # Set by the commit, once every record is scored or dead-lettered.
  completed_at: Optional[str] = None
  counts: Optional[Counts] = None
  scores: List[str] = dataclasses.field(default_factory=list)
  errors: List[str] = dataclasses.field(default_factory=list)
  # The union this run completes: the earlier runs' shards and its own.
  all_scores: Optional[List[str]] = None
  all_errors: Optional[List[str]] = None
  format_version: int = FORMAT_VERSION

  @property
  def union_scores(self) -> List[str]:
    return list(self.scores if self.all_scores is None else self.all_scores)

  @property
  def union_errors(self) -> List[str]:
    return list(self.errors if self.all_errors is None else self.all_errors)

  def committed(self, *, completed_at: str, counts: Counts,
                scores: List[str], errors: List[str],
                precisions_used: List[str], precision_reasons: List[str],
                earlier_scores: List[str], earlier_errors: List[str],
                earlier_rows_replaced: int = 0) -> "RunManifest":
    """The manifest of the finished run: what it wrote and counted, and
    which precision each worker chose and why."""
    precision = dataclasses.replace(self.model.precision, used=precisions_used,
                                    why=precision_reasons)
    increment = self.increment and dataclasses.replace(
        self.increment, earlier_rows_replaced=earlier_rows_replaced)
    return dataclasses.replace(
        self, model=dataclasses.replace(self.model, precision=precision),
        increment=increment, completed_at=completed_at, counts=counts,
        scores=scores, errors=errors, all_scores=earlier_scores + scores,
        all_errors=earlier_errors + errors)

  def to_dict(self) -> Dict[str, Any]:
    record = dataclasses.asdict(self)
    reading = record.pop("reading")
    names = {"text": reading.pop("text_column"),
             "id": reading.pop("id_column")}
    record["format"] = reading["format"]
    record["columns"] = names
    record["reading"] = {"format": reading.pop("format"), "columns": names,
                         **reading}
    return record

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)

  @classmethod
  def from_dict(cls, record: Any, *, source: str = "manifest"
                ) -> "RunManifest":
    if not isinstance(record, dict) or "run_id" not in record:
      raise ManifestError(f"{source} is not a scoring manifest")
    version = record.get("format_version", 1)
    if version not in SUPPORTED_FORMAT_VERSIONS:
      raise ManifestError(
          f"{source}: manifest format {version} is newer than this version "
          f"of reviewscore reads ({', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})")
    try:
      return cls(
          run_id=record["run_id"], input=record.get("input"),
          reading=_reading(record), model=_model(record.get("model") or {}),
          batching=dict(record.get("batching") or {}),
          input_files=_file_states(record.get("input_files")),
          extends=list(record.get("extends") or []),
          increment=_sub(IncrementRecord, record.get("increment")),
          completed_at=record.get("completed_at"),
          counts=_sub(Counts, record.get("counts")),
          scores=list(record.get("scores") or []),
          errors=list(record.get("errors") or []),
          all_scores=record.get("all_scores"),
          all_errors=record.get("all_errors"), format_version=version)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
      raise ManifestError(f"{source} is not a scoring manifest ({e})") from None

  @classmethod
  def from_json(cls, text: str, *, source: str = "manifest") -> "RunManifest":
    try:
      record = json.loads(text)
    except ValueError as e:  # JSONDecodeError is one
      raise ManifestError(f"{source} is not a readable manifest ({e})") from None
    return cls.from_dict(record, source=source)


def _sub(kind, record):
  if record is None:
    return None
  names = {f.name for f in dataclasses.fields(kind)}
  return kind(**{k: v for k, v in record.items() if k in names})


def _model(record: Dict[str, Any]) -> ModelUsed:
  precision = record.get("precision") or {}
  return ModelUsed(
      dir=record.get("dir"), name=record.get("name"),
      fingerprint=record.get("fingerprint"),
      precision=Precision(requested=precision.get("requested"),
                          used=list(precision.get("used") or []),
                          why=list(precision.get("why") or [])),
      threshold=record.get("threshold"),
      tokenization=record.get("tokenization"))


def _reading(record: Dict[str, Any]) -> Reading:
  # Manifests of older versions record only the format and the columns.
  reading = record.get("reading") or {}
  names = reading.get("columns") or record.get("columns") or {}
  return Reading(
      format=reading.get("format", record.get("format")),
      text_column=names.get("text"), id_column=names.get("id"),
      carried=reading.get("carried"),
      positional_ids=reading.get("positional_ids"),
      max_review_bytes=reading.get("max_review_bytes"))


def _file_states(record) -> Optional[Dict[str, FileState]]:
  if record is None:
    return None
  if not isinstance(record, dict):
    raise TypeError("input_files is not an object")
  return {path: _sub(FileState, state) for path, state in record.items()}


def read_manifest(prefix: str) -> RunManifest:
  """The manifest of the scoring output at PREFIX, on any Beam filesystem;
  ManifestError (one line) when it is missing or damaged."""
  from apache_beam.io.filesystems import FileSystems
  path = outputs.manifest_path(prefix)
  if not FileSystems.exists(path):
    raise ManifestError(f"{prefix}: no complete scoring output there "
                        f"({path.rsplit('/', 1)[-1]} is missing: the run has "
                        "not finished, failed, or the prefix is wrong)")
  return read_manifest_file(path)


def read_manifest_file(path: str) -> RunManifest:
  """The manifest at `path` (any Beam filesystem); ManifestError when it is
  not a scoring run's."""
  from apache_beam.io.filesystem import CompressionTypes
  from apache_beam.io.filesystems import FileSystems
  with FileSystems.open(path,
                        compression_type=CompressionTypes.UNCOMPRESSED) as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ManifestError(f"{path} is not a readable manifest ({e})") from None
  return RunManifest.from_json(text, source=path)
