"""The embedding store (stage 1 -> stage 2 contract, SPEC §4): a Zarr v3 folder per encoder,
one group per video, each video written whole or not at all.

- ``layout``: the format, what a store is, which videos are complete, the in-memory layouts;
- ``writer``: creation and per-video writes, safe with several writers (locks, staging);
- ``reader``: single videos, the layout without embeddings, whole stores into any destination,
  NaN/Inf checks, HDF5 export.

``EmbeddingStore`` is the one class callers use (``EmbeddingStore.open(path)`` to read,
``EmbeddingStore.create_or_open(path, key, meta, dim)`` to write).
"""
from fer_pipeline.store.layout import (EMB_CHUNK_FRAMES, FORMAT, LoadedStore, StoreIndex,
                                       StoreKeyError, VideoRecord, chunk_rows)
from fer_pipeline.store.reader import StoreReader, frame_ranges, nonfinite_rows
from fer_pipeline.store.writer import StoreWriter

__all__ = ["EmbeddingStore", "LoadedStore", "StoreIndex", "StoreKeyError", "VideoRecord",
           "chunk_rows", "nonfinite_rows", "frame_ranges", "FORMAT", "EMB_CHUNK_FRAMES"]


class EmbeddingStore(StoreWriter, StoreReader):
    """One embedding store on disk: everything ``StoreWriter`` and ``StoreReader`` do."""
