"""Pretraining recipes, one YAML per data set (installed as mpinet_hub.configs)."""
