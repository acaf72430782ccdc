"""Commands that chain stages (demo, predict)."""
