"""Self-supervised pretraining: two views, the MPINet method and its baselines, and the trainer."""
