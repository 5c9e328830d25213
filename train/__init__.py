"""Training side of reviewscore: encoder import, data, model, export, CLI.

TF Hub's KerasLayer needs the legacy Keras 2 (tf-keras); TensorFlow picks the
Keras it exposes when it is first imported, so the switch is set here, before
any module of this package imports TensorFlow.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
