"""Errors raised by the services; each carries the HTTP status the REST API answers with.

Part of the fleet's exception tree: `ServiceError` is a `schemas.errors.ControllerError`."""

from __future__ import annotations

from schemas.errors import ControllerError


class ServiceError(ControllerError):
    """A request the services refuse; the message says what is wrong and how to fix it."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ForbiddenError(ServiceError):
    status_code = 403


class NotFoundError(ServiceError):
    status_code = 404


class ConflictError(ServiceError):
    status_code = 409


class InvalidRequestError(ServiceError):
    status_code = 422


class PayloadTooLargeError(ServiceError):
    status_code = 413


class ServiceUnavailableError(ServiceError):
    status_code = 503
