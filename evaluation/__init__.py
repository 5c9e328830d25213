"""Metrics and plots, shared by training, `evaluate` and `report`.

Depends on `schemas` at most; `train` and `pipeline` both build on it.
"""
