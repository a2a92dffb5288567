"""The error `jmod.summary` and `jmod.profiler` raise for misuse (defined in jmod.errors)."""

from jmod.errors import SummaryError

__all__ = ["SummaryError"]
