"""Inference engines other than TensorFlow for a model directory's derived
copies; the SavedModel stays the contract (`schemas.model_dir`)."""
