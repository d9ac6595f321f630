"""Model-card templates, one per pretrained tag (installed as mpinet_hub.weights_cards)."""
