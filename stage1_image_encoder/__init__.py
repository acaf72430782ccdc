"""Stage 1: the image encoder (timm Swin) and the per-frame embedding store."""
