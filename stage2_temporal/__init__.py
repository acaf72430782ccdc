"""Stage 2: temporal model (Transformer + V-NAW) trained on cached embeddings."""
