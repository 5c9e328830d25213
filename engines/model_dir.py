"""The one loader of a model directory (`schemas.model_dir`), on any Beam
filesystem, for scoring and for training's evaluate, predict and optimize.

`load_model_card` checks the directory without loading a TensorFlow graph
(the launcher of a Dataflow job need not load the model), before any data
is read, so that a wrong `--model` costs one clear line rather than a
worker stack trace an hour into a job. `load_saved_model` does the same
checks, then loads the SavedModel.
"""
from typing import Any, Dict, Tuple

from apache_beam.io.filesystems import FileSystems

from runtime import text_ops
from runtime.filesystems import (join_path, local_copy, missing_filesystem,
                                 sha256_of)
from schemas import model_dir as contract


class ModelError(Exception):
  """The model directory cannot be scored with: one line says why."""


def saved_model_path(model_dir: str) -> str:
  return join_path(model_dir, contract.SAVED_MODEL_DIR)


def copy_path(model_dir: str, copy: contract.DerivedCopy) -> str:
  """The folder of one of the model's copies."""
  return join_path(model_dir, copy.folder)


def _read_bytes(path: str) -> bytes:
  with FileSystems.open(path) as f:
    return f.read()


def _check_saved_model_files(model_dir: str) -> None:
  """The SavedModel's graph and weights index are there."""
  saved_model = saved_model_path(model_dir)
  pb_path = join_path(saved_model, contract.SAVED_MODEL_GRAPH)
  if not FileSystems.exists(pb_path):
    raise ModelError(f"{model_dir}: no SavedModel ({pb_path} is missing)")
  index_path = join_path(saved_model, *contract.SAVED_MODEL_INDEX.split("/"))
  if not FileSystems.exists(index_path):
    raise ModelError(f"{model_dir}: the SavedModel has no variables "
                     f"({index_path} is missing)")


def _check_saved_model(model_dir: str, signatures) -> None:
  """The SavedModel's graph proto parses and has the card's signatures.

  Parsing the graph file with protobuf catches a truncated or foreign file
  and a model without the signatures the card promises (damaged variables
  would still fail on the worker, loudly). It needs TensorFlow's proto
  classes, whose import is TensorFlow's: only where the card records no
  sha256 of the graph, or the file no longer has it.
  """
  pb_path = join_path(saved_model_path(model_dir), contract.SAVED_MODEL_GRAPH)
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


def _changed_file(path: str, expected: str) -> str:
  """'' when the file's sha256 is `expected`, else what it is instead."""
  actual = sha256_of(path)
  return "" if actual == expected else (
      f"sha256 {actual[:12]}, the model card says {expected[:12]}")


def _check_files_unchanged(model_dir: str, card: contract.ModelCard) -> None:
  """The SavedModel's graph and weights index are the ones training wrote."""
  for name, expected in (card.files_sha256 or {}).items():
    path = join_path(saved_model_path(model_dir), *name.split("/"))
    changed = _changed_file(path, expected)
    if changed:
      raise ModelError(f"{path}: changed since training ({changed}); refusing "
                       "to score with weights the card does not describe")


def _as_trained(model_dir: str, card: contract.ModelCard) -> bool:
  """Whether the card records the sha256 of every checked file and each
  still has it: then the graph is the one training wrote, with the
  signatures it listed, and need not be parsed."""
  recorded = card.files_sha256 or {}
  return all(name in recorded for name in contract.CHECKED_FILES) and not any(
      _changed_file(join_path(saved_model_path(model_dir), *name.split("/")),
                    expected) for name, expected in recorded.items())


def _copy_problem(folder: str, files_sha256: Dict[str, str], precision: str
                  ) -> str:
  """'' when every file of a copy is there as made, else what is wrong."""
  for name, expected in sorted(files_sha256.items()):
    path = join_path(folder, name)
    if not FileSystems.exists(path):
      return (f"{path}: missing (the model card offers a {precision} copy "
              "with this file; `reviewscore optimize` remakes it)")
    changed = _changed_file(path, expected)
    if changed:
      return (f"{path}: changed since it was made ({changed}); `reviewscore "
              "optimize` remakes it")
  return ""


def copy_problems(model_dir: str, card: contract.ModelCard) -> Dict[str, str]:
  """precision (or `tokenizer`) -> one line on what is wrong with the copy
  the card offers (a file missing or altered); empty when every copy is as
  made."""
  problems = {}
  copies = dict(sorted(card.copies.items()))
  if card.fast_tokenizer:
    copies[contract.TOKENIZER] = card.fast_tokenizer.copy
  for name, copy in copies.items():
    problem = _copy_problem(copy_path(model_dir, copy), copy.files_sha256,
                            name)
    if problem:
      problems[name] = problem
  return problems


def check_copy_files(folder: str, files_sha256: Dict[str, str],
                     precision: str) -> None:
  """A worker's check of the copy it is about to compute with (its local
  folder): ModelError when a file is missing or altered."""
  problem = _copy_problem(folder, files_sha256, precision)
  if problem:
    raise ModelError(f"{problem} (refusing to score with it)")


def _check_copies(model_dir: str, card: contract.ModelCard) -> None:
  """The copies the card offers are there, as they were made: a missing or
  altered copy stops the job here, never scores another way."""
  problems = copy_problems(model_dir, card)
  if problems:
    raise ModelError(next(iter(problems.values())) if len(problems) == 1
                     else "; ".join(problems.values()))


def load_model_card(model_dir: str, *, check_saved_model: bool = True,
                    check_copies: bool = True) -> contract.ModelCard:
  """Reads and validates DIR/model_card.json (and DIR/saved_model, and the
  copies it offers unless `check_copies` is False: commands that never
  compute with them)."""
  model_dir = str(model_dir).rstrip("/") or "/"
  unreachable = missing_filesystem(model_dir)
  if unreachable:
    raise ModelError(unreachable)
  try:
    return _load_model_card(model_dir, check_saved_model, check_copies)
  except ModelError:
    raise
  except Exception as e:  # a bucket unreachable: offline, no credentials...
    lines = [line for line in str(e).splitlines() if line.strip()]
    raise ModelError(f"{model_dir}: cannot be read ({type(e).__name__}: "
                     f"{lines[-1][:300] if lines else ''})") from None


def _load_model_card(model_dir: str, check_saved_model: bool,
                     check_copies: bool) -> contract.ModelCard:
  card_path = join_path(model_dir, contract.MODEL_CARD_FILE)
  if not FileSystems.exists(card_path):
    if not FileSystems.exists(model_dir):
      raise ModelError(f"{model_dir}: no such model directory")
    raise ModelError(f"{model_dir}: no {contract.MODEL_CARD_FILE} (not a "
                     "finished model directory from `reviewscore train`)")
  try:
    card = contract.ModelCard.from_json(_read_bytes(card_path).decode("utf-8"))
  except UnicodeDecodeError as e:
    raise ModelError(f"{card_path}: not valid JSON ({e})") from None
  except contract.ModelCardError as e:
    raise ModelError(f"{card_path}: {e}") from None
  if check_saved_model:
    _check_saved_model_files(model_dir)
    if not _as_trained(model_dir, card):
      _check_saved_model(model_dir, card.signatures)
      _check_files_unchanged(model_dir, card)
    if check_copies:
      try:
        _check_copies(model_dir, card)
      except contract.ModelCardError as e:
        raise ModelError(f"{card_path}: {e}") from None
  return card


def load_saved_model(model_dir, *, check_copies: bool = True
                     ) -> Tuple[Any, contract.ModelCard]:
  """(SavedModel, model card) of a directory written by `reviewscore train`,
  after `load_model_card`'s checks; copied to a local folder first where
  TensorFlow cannot open the filesystem itself."""
  card = load_model_card(str(model_dir), check_copies=check_copies)
  import tensorflow as tf
  text_ops.register_text_ops()  # the tokenizer's WordPiece ops
  saved_model = saved_model_path(str(model_dir).rstrip("/") or "/")
  return tf.saved_model.load(local_copy(saved_model)), card
