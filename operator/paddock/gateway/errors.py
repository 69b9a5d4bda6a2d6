"""API errors in the Managed Agents envelope (reference §1.4).

Handlers raise ``ApiError``; the error middleware turns it into
``{"type": "error", "error": {"type", "message"[, "details"]}, "request_id"}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from paddock.gateway.views import ErrorObject, ErrorResponse

# The `error.type` of each status the gateway answers with.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    417: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    """An error answer: HTTP ``status``, envelope ``error.type`` and ``message``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.close = close
        """Close the connection after the answer (the request's bytes cannot be trusted)."""
        self.status = status
        self.type = ERROR_TYPES.get(status, "api_error")
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self, request_id: str) -> ErrorResponse:
        error = ErrorObject(type=self.type, message=self.message, details=self.details or None)
        return ErrorResponse(error=error, request_id=request_id)


def invalid(message: str, **details: Any) -> ApiError:
    return ApiError(400, message, details=details or None)


def unsupported(what: str, why: str = "") -> ApiError:
    """400 for a Managed Agents feature Paddock does not implement (docs/gateway.md)."""
    return ApiError(400, f"{what} is not supported by Paddock" + (f": {why}" if why else ""))


def not_found(message: str, **details: Any) -> ApiError:
    return ApiError(404, message, details=details or None)


def conflict(message: str) -> ApiError:
    """409 for a real conflict: the SDK retries 409s unless told not to."""
    return ApiError(409, message, headers={"x-should-retry": "false"})


def unavailable(message: str) -> ApiError:
    """503 when a dependency (Redis, the apiserver) failed; the SDK retries it."""
    return ApiError(503, message)


def from_validation(error: ValidationError) -> ApiError:
    """400 naming the first few invalid fields, as `events.0.type: message`."""
    parts = []
    for item in error.errors(include_url=False)[:5]:
        location = ".".join(str(part) for part in item["loc"])
        parts.append(f"{location}: {item['msg']}" if location else item["msg"])
    return invalid("; ".join(parts) or "invalid request")
