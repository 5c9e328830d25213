"""Resolves what users pass as `--encoder` to an encoder and its preprocessor.

Three forms are accepted: a name from the TensorFlow "Classify text with BERT"
tutorial (mapped to its TF Hub encoder and matching preprocessor exactly as
the tutorial maps them), a TF Hub / Kaggle URL, or a local directory written
by `reviewscore import-encoder`. Hub handles need the internet; offline they
fail within seconds with a message that names the local alternative.
"""
import dataclasses
import hashlib
import os
import pathlib
import socket
import urllib.parse
from typing import Optional

from train.encoders.importer import (ENCODER_DIR, INFO_FILE, PREPROCESSOR_DIR,
                                  PRETRAIN_STATE_FILE, read_encoder_info)

_TFHUB = "https://tfhub.dev"
_UNCASED_PREPROCESS = f"{_TFHUB}/tensorflow/bert_en_uncased_preprocess/3"


def _tutorial_handles() -> dict:
  handles = {
      "bert_en_uncased_L-12_H-768_A-12":
          (f"{_TFHUB}/tensorflow/bert_en_uncased_L-12_H-768_A-12/3",
           _UNCASED_PREPROCESS),
      "bert_en_cased_L-12_H-768_A-12":
          (f"{_TFHUB}/tensorflow/bert_en_cased_L-12_H-768_A-12/3",
           f"{_TFHUB}/tensorflow/bert_en_cased_preprocess/3"),
      "bert_multi_cased_L-12_H-768_A-12":
          (f"{_TFHUB}/tensorflow/bert_multi_cased_L-12_H-768_A-12/3",
           f"{_TFHUB}/tensorflow/bert_multi_cased_preprocess/3"),
      "albert_en_base": (f"{_TFHUB}/tensorflow/albert_en_base/2",
                         f"{_TFHUB}/tensorflow/albert_en_preprocess/3"),
      "electra_small": (f"{_TFHUB}/google/electra_small/2", _UNCASED_PREPROCESS),
      "electra_base": (f"{_TFHUB}/google/electra_base/2", _UNCASED_PREPROCESS),
      "experts_pubmed": (f"{_TFHUB}/google/experts/bert/pubmed/2",
                         _UNCASED_PREPROCESS),
      "experts_wiki_books": (f"{_TFHUB}/google/experts/bert/wiki_books/2",
                             _UNCASED_PREPROCESS),
      "talking-heads_base":
          (f"{_TFHUB}/tensorflow/talkheads_ggelu_bert_en_base/1",
           _UNCASED_PREPROCESS),
  }
  for layers in (2, 4, 6, 8, 10, 12):
    for hidden in (128, 256, 512, 768):
      name = f"small_bert/bert_en_uncased_L-{layers}_H-{hidden}_A-{hidden // 64}"
      handles[name] = (f"{_TFHUB}/tensorflow/{name}/1", _UNCASED_PREPROCESS)
  return handles


TUTORIAL_ENCODERS = _tutorial_handles()


class EncoderUnavailable(Exception):
  """The encoder cannot be loaded: unknown name, bad directory, or offline."""


@dataclasses.dataclass(frozen=True)
class EncoderSource:
  """Where an encoder and its matching preprocessor are loaded from."""
  name: str
  encoder: str
  preprocessor: str
  local_info: Optional[dict] = None  # encoder_info.json of an imported encoder

  @property
  def is_local(self) -> bool:
    return self.local_info is not None

  @property
  def default_pooling(self) -> str:
    """What the encoder was trained to be pooled with ("mean" or "cls").

    Recorded by `import-encoder`; encoders imported before it recorded one
    are sentence-transformers checkpoints when their source says so. TF Hub
    BERTs are pooled by their [CLS] pooler, as the tutorial does.
    """
    checkpoint = (self.local_info or {}).get("checkpoint") or {}
    if checkpoint.get("pooling") in ("mean", "cls"):
      return checkpoint["pooling"]
    return "mean" if "sentence-transformers" in str(
        checkpoint.get("source", "")) else "cls"

  def provenance(self) -> dict:
    """What a model card says about the encoder's origin."""
    record = {"name": self.name, "encoder": self.encoder,
              "preprocessor": self.preprocessor}
    if self.local_info:
      record["checkpoint"] = self.local_info.get("checkpoint")
      record["bert_config"] = self.local_info.get("bert_config")
      if self.local_info.get("pretraining"):  # from `reviewscore pretrain`
        record["pretraining"] = self.local_info["pretraining"]
    return record


def _is_url(handle: str) -> bool:
  return urllib.parse.urlparse(handle).scheme in ("http", "https", "gs")


def _hub_cache_has(handle: str) -> bool:
  cache = os.environ.get("TFHUB_CACHE_DIR")
  if not cache:
    return False
  digest = hashlib.sha1(handle.encode("utf-8")).hexdigest()
  return (pathlib.Path(cache) / digest).is_dir()


def check_reachable(handle: str, *, timeout_s: float = 5.0) -> None:
  """Fails fast, with the local alternative, when a hub handle cannot load."""
  if not _is_url(handle) or _hub_cache_has(handle):
    return
  url = urllib.parse.urlparse(handle)
  host = url.hostname or ""
  port = url.port or (80 if url.scheme == "http" else 443)
  try:
    socket.create_connection((host, port), timeout=timeout_s).close()
  except OSError as e:
    raise EncoderUnavailable(
        f"cannot reach {host} to download {handle} ({e.__class__.__name__}); "
        "offline, import a local encoder with `reviewscore import-encoder "
        "encoders/minilm` and pass `--encoder encoders/minilm`") from None


def _imported_on_a_bucket(spec: str) -> Optional[str]:
  """A local copy of an encoder directory (import-encoder's layout) at a
  Beam filesystem URL; None for anything else there (a TF Hub module on
  gs://, which hub loads itself)."""
  from runtime.filesystems import as_path, is_remote, local_copy, missing_filesystem
  if not is_remote(spec) or urllib.parse.urlparse(spec).scheme in ("http", "https"):
    return None
  unreachable = missing_filesystem(spec)
  if unreachable:
    raise EncoderUnavailable(unreachable)
  if not (as_path(spec) / ENCODER_DIR).is_dir():
    return None
  return local_copy(spec)


def resolve_encoder(spec: str, *, preprocessor: Optional[str] = None
                    ) -> EncoderSource:
  """Maps a tutorial name, URL or local directory (or one on a bucket) to
  an EncoderSource."""
  if preprocessor and "://" in preprocessor and urllib.parse.urlparse(
      preprocessor).scheme not in ("http", "https", "gs"):
    # A preprocessor SavedModel on a bucket TensorFlow cannot open (s3://).
    from runtime.filesystems import local_copy, missing_filesystem
    if missing_filesystem(preprocessor):
      raise EncoderUnavailable(missing_filesystem(preprocessor))
    preprocessor = local_copy(preprocessor)
  copied = _imported_on_a_bucket(spec)
  if copied is not None:
    source = resolve_encoder(copied, preprocessor=preprocessor)
    return dataclasses.replace(source, name=spec)
  path = pathlib.Path(spec).expanduser()
  if path.is_dir():
    if (path / PRETRAIN_STATE_FILE).exists() and not (path / INFO_FILE).exists():
      raise EncoderUnavailable(
          f"{spec}: pre-training has not finished; continue it with "
          "`reviewscore pretrain ... --resume`")
    if not (path / ENCODER_DIR).is_dir() or not (
        preprocessor or (path / PREPROCESSOR_DIR).is_dir()):
      raise EncoderUnavailable(
          f"{spec}: not an encoder directory (expected {ENCODER_DIR}/ and "
          f"{PREPROCESSOR_DIR}/ as `reviewscore import-encoder` writes them)")
    return EncoderSource(
        name=str(path.resolve()), encoder=str(path / ENCODER_DIR),
        preprocessor=preprocessor or str(path / PREPROCESSOR_DIR),
        local_info=read_encoder_info(path) or {})
  if spec in TUTORIAL_ENCODERS:
    encoder, matching = TUTORIAL_ENCODERS[spec]
    return EncoderSource(name=spec, encoder=encoder,
                         preprocessor=preprocessor or matching)
  if _is_url(spec):
    return EncoderSource(name=spec, encoder=spec,
                         preprocessor=preprocessor or _UNCASED_PREPROCESS)
  known = ", ".join(sorted(TUTORIAL_ENCODERS)[:3])
  raise EncoderUnavailable(
      f"{spec!r} is neither a local encoder directory, a URL nor a tutorial "
      f"encoder name (e.g. {known}, …)")
