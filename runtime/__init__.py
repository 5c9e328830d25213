"""Process-level concerns shared by training and scoring: what the hardware
computes natively, keeping third-party start-up noise off the terminal,
tensorflow-text's ops without its Python package, and paths on any Beam
filesystem.

Imports nothing of ours and no TensorFlow at import time, so that a Beam
launcher or worker can use it cheaply.
"""
