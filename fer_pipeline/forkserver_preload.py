"""Imported last by the fork server of self-spawned ranks (``distributed.spawn``), after torch
and the worker's module: moves every object created so far into the collector's permanent
generation, so that a rank's garbage collections do not write to (and so copy) the pages it
shares with the server and the other ranks."""
import gc

gc.freeze()
