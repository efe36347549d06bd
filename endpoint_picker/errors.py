"""Errors that end a request with a definite HTTP answer instead of a crash.

Each class carries the HTTP status the proxy returns to the client and the upstream error-code name used as
the ``error_code`` label of ``inference_objective_request_error_total``.
"""

from __future__ import annotations


class PickerError(Exception):
    """A request that cannot be routed; ``status`` is what the client receives."""

    status: int = 500
    code: str = "Internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(PickerError):
    status = 400
    code = "BadRequest"


class PayloadTooLarge(PickerError):
    status = 413
    code = "BadRequest"


class ResourceExhausted(PickerError):
    status = 429
    code = "ResourceExhausted"


class ServiceUnavailable(PickerError):
    status = 503
    code = "ServiceUnavailable"


class Internal(PickerError):
    status = 500
    code = "Internal"
