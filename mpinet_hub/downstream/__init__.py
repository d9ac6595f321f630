"""Downstream use of the encoders: SMP segmentation models, fine-tuning, evaluation and prediction."""
