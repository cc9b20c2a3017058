"""Trivial jobs the benchmarks enqueue (imported by the workers as `benchmarks._jobs`). No imports
of Django or the app here: a worker must be able to import this module cheaply."""

import time


def stamp() -> float:
    """Return when the job started, on CLOCK_MONOTONIC (system-wide: comparable with the producer's)."""
    return time.monotonic()
