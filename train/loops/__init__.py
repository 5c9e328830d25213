"""The training loops (fine-tuning and pretraining) and what they share."""
