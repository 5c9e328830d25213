"""tensorflow-text's kernels, registered without its Python package.

A SavedModel that tokenizes runs tensorflow-text ops, which TensorFlow can
execute only once their kernel libraries are loaded. `import tensorflow_text`
loads them, and also defines its Keras layers, which imports Keras: the
largest part of TensorFlow's own import time, at the start of every scoring
process and worker, for layers scoring never uses. Loading the kernel
libraries directly registers the same ops.
"""
import glob
import importlib.util
import os
import sys
import threading

_LOCK = threading.Lock()
_registered = False


def _kernel_libraries():
  """The op libraries the package's Python modules load (`python/**/_*.so`),
  named as they name them (TensorFlow caches a library by its path)."""
  spec = importlib.util.find_spec("tensorflow_text")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("tensorflow-text is not installed (pip install tensorflow-text)")
  package = list(spec.submodule_search_locations)[0]
  return sorted(glob.glob(os.path.join(package, "python", "**", "_*.so"),
                          recursive=True))


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
        tf.load_op_library(library)
    except (tf.errors.OpError, OSError):
      libraries = []
    if not libraries:  # already imported, or a layout this does not know
      import tensorflow_text  # noqa: F401
    _registered = True
