"""The runtime's errors. Each carries the HTTP status it maps to; the mapping lives here.

Messages are written for clients: they name the model, input and expectation, and
never contain a traceback or a file path.
"""

from __future__ import annotations


class InferStackError(Exception):
    """Root of every error the runtime raises on purpose."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(InferStackError):
    """The client sent something the protocol or the model cannot take."""

    status_code = 400


class ModelNotFoundError(InferStackError):
    """No model (or model version) by that name is served here."""

    status_code = 404


class RouteNotFoundError(InferStackError):
    """No endpoint at that path."""

    status_code = 404


class MethodNotAllowedError(InferStackError):
    """The path exists, the method does not."""

    status_code = 405


class PayloadTooLargeError(InferStackError):
    """The request body (or its decompressed form) is over the configured limit."""

    status_code = 413


class UnsupportedMediaTypeError(InferStackError):
    """The Content-Type or Content-Encoding is not one the endpoint reads."""

    status_code = 415


class ModelNotReadyError(InferStackError):
    """The model exists but is loading or failed to load."""

    status_code = 503


class ModelLoadError(InferStackError):
    """A model file could not be fetched or loaded (reported as not ready)."""

    status_code = 503


class NoReleaseYet(ModelLoadError):
    """The model is deployed but has no release yet (its live pointer does not exist)."""


class OverloadedError(InferStackError):
    """The model's queue is full, or a request waited in it past its timeout: retry later."""

    status_code = 429


class InferenceError(InferStackError):
    """The backend failed on input that passed validation (a server-side fault)."""

    status_code = 500
