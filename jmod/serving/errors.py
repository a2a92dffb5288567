"""Errors of `jmod.serving`: each carries the HTTP status and TF Serving error code it answers with.

Example:
    >>> from jmod.serving.errors import ServingError
    >>> e = ServingError.not_found("Servable not found for request: Latest(half)")
    >>> e.status, e.code, str(e)
    (404, 'NOT_FOUND', 'Servable not found for request: Latest(half)')
"""

from jmod.errors import JmodError


class ServingError(JmodError, ValueError):
    """A request (or server option) that cannot be served; answered as `{"error": message}`.

    `status` is the HTTP status (400 bad request, 404 unknown model, version
    or route, 500 a failure inside the model, 503 not ready), `code` the
    TensorFlow status code name TF Serving would report.
    """

    def __init__(self, message, status=400, code="INVALID_ARGUMENT"):
        super().__init__(message)
        self.status = status
        self.code = code

    @classmethod
    def not_found(cls, message):
        """A 404: unknown model, version or route."""
        return cls(message, 404, "NOT_FOUND")

    @classmethod
    def internal(cls, message):
        """A 500: the model failed on a request it accepted."""
        return cls(message, 500, "INTERNAL")

    @classmethod
    def unavailable(cls, message):
        """A 503: no version loaded yet, or the server is shutting down."""
        return cls(message, 503, "UNAVAILABLE")
