"""The API's errors: one exception type that renders the JSON error body with its status.

Codes and statuses are those of ``backends/CONTRACT.md`` §5 (the Rust runtime's
``error.rs``). Engine failures name the engine and host, never a connection string.
"""

from __future__ import annotations

import json


class ApiError(Exception):
    """An error the client sees: ``{"error": {"code", "message", "field"?}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        # Response headers the error needs besides its JSON body (a 401's challenge).
        self.headers = headers or {}

    def body(self) -> dict:
        detail = {"code": self.code, "message": self.message}
        if self.field is not None:
            detail["field"] = self.field
        return {"error": detail}

    def json(self) -> bytes:
        return json.dumps(self.body(), separators=(",", ":"), ensure_ascii=False).encode()

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r}, field={self.field!r})"

    # The constructors, one per kind of failure.

    @classmethod
    def invalid(cls, field: str, message: str) -> ApiError:
        return cls(400, "invalid", message, field)

    @classmethod
    def bad_request(cls, message: str, field: str | None = None) -> ApiError:
        return cls(400, "bad_request", message, field)

    @classmethod
    def unsupported_media_type(cls) -> ApiError:
        return cls(415, "unsupported_media_type", "send the body as JSON with `content-type: application/json`")

    @classmethod
    def not_found(cls, what: str, id_: object) -> ApiError:
        return cls(404, "not_found", f"no {what} with id {id_}; check the id")

    @classmethod
    def no_route(cls, path: str) -> ApiError:
        return cls(404, "not_found", f"nothing at {path}")

    @classmethod
    def method_not_allowed(cls) -> ApiError:
        return cls(405, "method_not_allowed", "method not allowed")

    @classmethod
    def conflict(cls, field: str, value: str) -> ApiError:
        return cls(409, "conflict", f"{field} `{value}` is already taken; choose another", field)

    @classmethod
    def refused(cls, why: str) -> ApiError:
        return cls(409, "refused", why)

    @classmethod
    def session_missing(cls) -> ApiError:
        return cls(401, "session_missing", "this request needs the x-stacklab-session header the proxy adds")

    @classmethod
    def session_expired(cls) -> ApiError:
        return cls(410, "session_expired", "your session has expired; start a new one with POST /api/sessions")

    @classmethod
    def unauthorized(cls) -> ApiError:
        # A 401 names the scheme it wants (RFC 9110 §11.6.1): the runtime credential is a bearer token.
        return cls(401, "unauthorized", "send the runtime credential as `Authorization: Bearer <token>`",
                   headers={"WWW-Authenticate": "Bearer"})

    @classmethod
    def forbidden(cls) -> ApiError:
        return cls(403, "forbidden", "the credential is not valid for this instance")

    @classmethod
    def too_large(cls, limit: int) -> ApiError:
        return cls(413, "body_too_large", f"the body is larger than {limit} bytes")

    @classmethod
    def unavailable(cls, engine: str, reason: str) -> ApiError:
        return cls(
            503,
            "unavailable",
            f"{engine} is unavailable: {reason}; retry shortly, and if it stays down re-provision "
            "the session (POST /api/session/reprovision) or start a new one",
        )

    @classmethod
    def busy(cls, message: str) -> ApiError:
        # A bounded resource (hashing, benchmarks) is taken; answered with Retry-After (app.py).
        return cls(503, "busy", message)

    @classmethod
    def benchmark_running(cls) -> ApiError:
        return cls(409, "benchmark_running",
                   "this session is running a benchmark already; wait for its result")

    @classmethod
    def internal(cls, detail: str) -> ApiError:
        # The detail goes to the log (see app.py), never to the client.
        err = cls(500, "internal", "the backend failed; retry, and report a bug if it persists")
        err.detail = detail
        return err


class StoreError(Exception):
    """A database adapter's failure: a unique index said no, or the engine failed."""


class Conflict(StoreError):
    def __init__(self, field: str):
        super().__init__(f"{field} is already taken")
        self.field = field


class StoreUnavailable(StoreError):
    pass


class CacheError(Exception):
    """A cache adapter's failure."""


class CacheUnavailable(CacheError):
    pass


class UnknownPolicy(CacheError):
    def __init__(self, engine: str, policy: str, choices: list[str]):
        super().__init__(f"`{policy}` is not a policy of {engine}; choose one of: {', '.join(choices)}")


class PolicyRefused(CacheError):
    pass


def from_cache_error(e: CacheError) -> ApiError:
    if isinstance(e, UnknownPolicy):
        return ApiError.invalid("policy", str(e))
    if isinstance(e, PolicyRefused):
        return ApiError.refused(str(e))
    return ApiError.unavailable("the cache", str(e))
