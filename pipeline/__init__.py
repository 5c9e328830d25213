"""Scoring side of reviewscore: a Beam pipeline from reviews to scored Parquet.

Workers import this package and `schemas`, never `train`: the SavedModel and
its model card are the whole contract with training.
"""
