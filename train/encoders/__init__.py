"""Pretrained encoders: where they come from and how they are imported."""
