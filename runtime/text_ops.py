"""tensorflow-text's kernels, registered without its Python package.

A SavedModel that tokenizes runs tensorflow-text ops, which TensorFlow can
execute only once their kernel libraries are loaded. `import tensorflow_text`
loads them, and also defines its Keras layers, which imports Keras: most of a
second at the start of every scoring process and worker, for layers scoring
never uses. Loading the kernel libraries directly registers the same ops.
"""
import importlib.util
import pathlib
import sys
import threading

_LOCK = threading.Lock()
_registered = False


def _kernel_libraries():
  spec = importlib.util.find_spec("tensorflow_text")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("tensorflow-text is not installed (pip install tensorflow-text)")
  folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "python" / "ops"
  return sorted(folder.glob("_*.so"))


def register_text_ops() -> None:
  """Makes tensorflow-text's ops runnable in this process, once."""
  global _registered
  with _LOCK:
    if _registered:
      return
    import tensorflow as tf
    libraries = [] if "tensorflow_text" in sys.modules else _kernel_libraries()
    try:
      for library in libraries:
        tf.load_op_library(str(library))
    except (tf.errors.NotFoundError, OSError):
      libraries = []
    if not libraries:  # already imported, or a layout this does not know
      import tensorflow_text  # noqa: F401
    _registered = True
