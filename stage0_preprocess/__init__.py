"""Stage 0: videos -> aligned face crops + frame manifest (parquet)."""
