"""From trained weights to a model directory: export, int8 copy, evaluation."""
