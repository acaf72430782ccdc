"""Handing freed heap memory back to the system (glibc; elsewhere these do nothing).

glibc keeps the memory of freed buffers below its (adaptive, up to 32 MiB) mmap threshold in
the process's heaps for reuse. After a phase that allocated many such buffers (reading a store
chunk by chunk, an evaluation pass) that memory stays counted against the process although
nothing uses it, once per rank:

- ``trim()`` returns what is free in the heaps (``malloc_trim``);
- but the top of a thread's own heap (an "arena") is not returned, and every thread that
  allocates gets an arena, up to 8 per core: Zarr reads chunks in a pool of up to 32 threads,
  each left holding tens of MiB after a store load (~200 MiB on 2 cores).
  ``limit_arenas()`` makes threads share 2 arenas (call it before the threads start).

Lowering the mmap threshold instead would return every large buffer at once but costs a page
fault per page of every batch (measured: a stage-2 epoch 1.65x slower).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os


M_ARENA_MAX = -8      # glibc's mallopt parameter


@functools.cache
def _libc_fn(name: str, *argtypes):
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or None), name)
    except (OSError, AttributeError):      # not glibc (macOS, musl): nothing to do
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn


def trim() -> bool:
    """Return the free memory of this process's heaps to the system; True if any was."""
    fn = _libc_fn("malloc_trim", ctypes.c_size_t)
    return bool(fn(0)) if fn is not None else False


def limit_arenas(n: int = 2) -> bool:
    """Threads started from now on share at most ``n`` heaps (measured on a 1M x 1024 store,
    one stage-2 process: 130 MiB less, epoch time unchanged); True if set. The environment's
    ``MALLOC_ARENA_MAX`` wins when given."""
    fn = _libc_fn("mallopt", ctypes.c_int, ctypes.c_int)
    if fn is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(fn(M_ARENA_MAX, n))
