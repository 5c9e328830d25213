"""Keeps TensorFlow's, absl's and Beam's start-up chatter off the terminal.

On a CPU machine TensorFlow prints C++ lines at import (oneDNN notices, "could
not find cuda drivers", "failed call to cuInit") before its own log level is
read, and Beam logs warnings about optional modules it does not need: to a
user they look like failures. `REVIEWSCORE_VERBOSE=1` (or `--verbose`) keeps
all of it. Our own lines and progress are untouched.
"""
import contextlib
import logging
import os
import sys
import threading
import warnings

VERBOSE_ENV = "REVIEWSCORE_VERBOSE"
# Loggers and source folders whose sub-ERROR records are start-up noise.
_NOISY_PACKAGES = ("apache_beam", "tensorflow", "tf_keras", "keras",
                   "tensorflow_hub", "tensorflow_text", "absl", "h5py")


def is_verbose() -> bool:
  return os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false", "no")


def set_verbose(verbose: bool) -> None:
  if verbose:
    os.environ[VERBOSE_ENV] = "1"


class _DropLibraryChatter(logging.Filter):
  """Passes ERROR and above, and everything that is not a noisy library's;
  but not Beam's own report of a failing bundle, whose cause our one-line
  error carries (REVIEWSCORE_VERBOSE shows it whole)."""

  def filter(self, record):
    name = record.name.split(".")[0]
    if record.levelno >= logging.ERROR:
      return not (name == "apache_beam" and record.exc_info)
    if name in _NOISY_PACKAGES:
      return False
    path = record.pathname.replace("\\", "/")
    return not any(f"/{p}/" in path for p in _NOISY_PACKAGES)


def quiet_process() -> None:
  """Call before TensorFlow or Beam load; a no-op when verbose."""
  if is_verbose():
    return
  # Level 3 drops TensorFlow's C++ INFO, WARNING and ERROR lines emitted after
  # absl's logger is initialised (cuInit's error among them); real failures
  # still surface as Python exceptions.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
  root = logging.getLogger()
  if not any(isinstance(f, _DropLibraryChatter)
             for handler in root.handlers for f in handler.filters):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(_DropLibraryChatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
  # A library thread that dies (Beam's gRPC readers when a worker process
  # is lost) would print its traceback; the pipeline's failure reaches the
  # user as our one-line error instead.
  threading.excepthook = _log_thread_failure
  for name in _NOISY_PACKAGES:
    warnings.filterwarnings("ignore", module=name)
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  warnings.filterwarnings("ignore", category=FutureWarning)


def _log_thread_failure(args) -> None:
  logging.getLogger("reviewscore.threads").debug(
      "thread %s stopped: %s: %s", getattr(args.thread, "name", "?"),
      args.exc_type.__name__, args.exc_value)


# What Beam's SDK worker processes (--direct_running_mode=multi_processing,
# portable runners) log at: their INFO lines about channels and harnesses
# would greet every run.
WORKER_LOG_LEVEL = "ERROR"


@contextlib.contextmanager
def stderr_silenced():
  """Points file descriptor 2 at /dev/null (C++ writes bypass sys.stderr)."""
  if is_verbose():
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as devnull:
      os.dup2(devnull.fileno(), 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


# Keras 3 and tf-keras: TensorFlow imports one of them eagerly at its own
# import, for Keras optimizers' SavedModel registrations.
_KERAS_PACKAGES = ("keras", "tf_keras")
_IMPORT_LOCK = threading.Lock()


def import_tensorflow(*, keras: bool = True):
  """Imports TensorFlow (and finds its devices) without the start-up lines.

  keras=False, for processes that only load and call SavedModels (scoring):
  TensorFlow's import skips its eager import of Keras, about a third of the
  import alone (benchmarks/results/code_choices.md). Keras stays importable:
  `tf.keras`, `import tensorflow.keras` or `import tf_keras` later load it as
  usual. No effect once TensorFlow is imported. While TensorFlow imports,
  another thread's `import keras` fails: call it before starting threads
  that import Keras.
  """
  quiet_process()
  with _IMPORT_LOCK:
    blocked = []
    if not keras and "tensorflow" not in sys.modules:
      # A None entry makes `import keras` raise ImportError, which
      # TensorFlow's eager import catches and passes over.
      blocked = [name for name in _KERAS_PACKAGES if name not in sys.modules]
      for name in blocked:
        sys.modules[name] = None
    try:
      with stderr_silenced():
        import tensorflow as tf
        tf.config.list_physical_devices("GPU")
    finally:
      for name in blocked:
        if sys.modules.get(name, "") is None:
          del sys.modules[name]
    if blocked:
      _restore_keras_paths(tf)
  return tf


def _restore_keras_paths(tf) -> None:
  """TensorFlow puts Keras' folders first on its own `__path__` (so that
  `import tensorflow.keras` finds them); with Keras blocked it found none
  and put None there instead. Puts back what it would have found."""
  from tensorflow.python.tools import module_util
  legacy = os.environ.get("TF_USE_LEGACY_KERAS") in ("true", "True", "1")
  folders = [module_util.get_parent_dir_for_name(
      "tf_keras.api._v2.keras" if legacy else "keras.api._v2.keras"),
             module_util.get_parent_dir_for_name("keras._tf_keras.keras")]
  rest = [p for p in tf.__path__ if p is not None]
  tf.__path__ = [p for p in folders if p is not None] + rest


def keep_pytorch_out() -> None:
  """Stops Beam's RunInference from importing PyTorch in this process.

  `apache_beam.ml.inference.base` imports a GPU model manager that imports
  PyTorch (and SciPy) whenever PyTorch is installed: 1.5 s and 210 MiB at
  the start of every scoring process that has it, for a feature we do not
  use. Beam catches the ImportError. Only for our own entry points: a
  process that already imported PyTorch keeps it.

  A finder that refuses the import, not a None in sys.modules: libraries
  that look PyTorch up there to ask whether an array is a tensor (SciPy,
  under scikit-learn, under Keras) take None for the module and fail.
  """
  if "torch" in sys.modules or any(isinstance(finder, _RefusePyTorch)
                                   for finder in sys.meta_path):
    return
  sys.meta_path.insert(0, _RefusePyTorch())


@contextlib.contextmanager
def pytorch_kept_out():
  """`keep_pytorch_out` for the length of a block: a process that scores
  and then quantizes (NNCF asks whether PyTorch is there) or trains gets
  its imports back."""
  installed = not any(isinstance(f, _RefusePyTorch) for f in sys.meta_path)
  keep_pytorch_out()
  try:
    yield
  finally:
    if installed:
      sys.meta_path[:] = [f for f in sys.meta_path
                          if not isinstance(f, _RefusePyTorch)]


class _RefusePyTorch:
  """An import finder that answers `import torch` with ModuleNotFoundError."""

  def find_spec(self, name, path=None, target=None):
    if name == "torch" or name.startswith("torch."):
      raise ModuleNotFoundError(f"No module named {name!r} (kept out of "
                                "this process: reviewscore does not use it)",
                                name=name)
    return None
