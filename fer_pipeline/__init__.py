"""Shared core of the FER pipeline: config, labels, stores, metrics, CLI."""
__version__ = "0.1.0"
