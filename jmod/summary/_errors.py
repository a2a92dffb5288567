"""The error `jmod.summary` and `jmod.profiler` raise for misuse.

Example:
    >>> issubclass(SummaryError, ValueError)
    True
"""

from jmod.errors import JmodError


class SummaryError(JmodError, ValueError):
    """A summary, trace or profile was asked for with bad data or in the wrong state."""
