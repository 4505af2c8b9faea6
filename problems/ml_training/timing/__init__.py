"""Timing: the executor, side by side, the cache and the runner's two programs."""
