"""The Flask application factory: blueprints, the session every data request needs, the
timing headers every response carries, and JSON for every error (CONTRACT.md §4, §5).

Flask's own error pages never reach a client: every ``HTTPException`` and every other exception
is answered with the API's JSON error body. Routing follows the Rust runtime's rules where
Werkzeug's differ: trailing and doubled slashes, which wrong methods are a 405 and which a 404,
and that ``/api/*`` and ``/graphql`` resolve the session before their route is known.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from .config import BackendConfig
from .errors import ApiError
from .service import Session, Trace
from .sessions import Sessions

log = logging.getLogger(__name__)

# Methods a route may answer; a request with another one is answered as the Rust router does.
ROUTED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Runtime:
    """What every request of this instance shares."""

    config: BackendConfig
    sessions: Sessions
    credential: str

    def __repr__(self) -> str:
        return f"Runtime(sessions={self.sessions!r})"

    def credential_matches(self, presented: str) -> bool:
        return bool(self.credential) and hmac.compare_digest(presented.encode(), self.credential.encode())


def json_response(status: int, value: object) -> Response:
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return Response(body, status=status, content_type="application/json")


def runtime() -> Runtime:
    from flask import current_app

    return current_app.extensions["stacklab"]


def session() -> Session:
    return g.session


def trace() -> Trace:
    return g.trace


def _segments(path: str) -> list[str]:
    return path.strip("/").split("/")


def _method_not_allowed_here(path: str) -> bool:
    """The paths where the Rust runtime answers a wrong method with 405 (elsewhere 404)."""
    s = _segments(path)
    return s in (["api", "users"], ["api", "cache"], ["graphql"]) or (len(s) == 3 and s[:2] == ["api", "users"])


def session_code() -> str:
    code = request.headers.get("x-stacklab-session")
    if code is None or not all(" " <= c <= "~" or c == "\t" for c in code):
        raise ApiError.session_missing()
    if not 16 <= len(code) <= 64 or not (code.isascii() and code.isalnum()):
        raise ApiError.session_expired()
    return code


def create_app(rt: Runtime) -> Flask:
    app = Flask(__name__)
    app.extensions["stacklab"] = rt
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = None  # bodies are bounded by body.read_json, with JSON errors

    from .api import analysis, cache, graphql, health, internal, users

    for bp in (health.bp, internal.bp, users.bp, cache.bp, analysis.bp, graphql.bp):
        app.register_blueprint(bp)

    @app.before_request
    def start() -> None:
        g.started = time.perf_counter()
        g.trace = Trace()
        first = _segments(request.path)[0]
        data_path = first in ("api", "graphql")
        if data_path:
            g.session = rt.sessions.get(session_code())
        if request.method not in ROUTED_METHODS:
            raise ApiError.method_not_allowed() if data_path and _method_not_allowed_here(request.path) \
                else ApiError.no_route(request.path)

    @app.after_request
    def timing(res: Response) -> Response:
        t: Trace | None = g.get("trace")
        started = g.get("started")
        backend_ms = (time.perf_counter() - started) * 1000 if started else 0.0
        cache_ms = t.cache_s * 1000 if t else 0.0
        db_ms = t.db_s * 1000 if t else 0.0
        res.headers["Server-Timing"] = f"backend;dur={backend_ms:.3f}, cache;dur={cache_ms:.3f}, db;dur={db_ms:.3f}"
        if t is not None and t.outcome is not None:
            res.headers["x-stacklab-cache"] = t.outcome
        return res

    @app.errorhandler(ApiError)
    def api_error(e: ApiError) -> Response:
        if e.status >= 500:
            # The proxy's request id ties this line to the inspector's capture.
            log.warning("request %s failed: %s %s", request.headers.get("x-request-id", "-"), e.code,
                        getattr(e, "detail", e.message))
        res = Response(e.json(), status=e.status, content_type="application/json", headers=e.headers)
        if e.code == "busy":
            from .guard import RETRY_AFTER_SECS

            res.headers["Retry-After"] = str(RETRY_AFTER_SECS)
        return res

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        if e.code == 404:
            err = ApiError.no_route(request.path)
        elif e.code == 405:
            err = ApiError.method_not_allowed() if _method_not_allowed_here(request.path) else ApiError.no_route(request.path)
        elif e.code == 413:
            err = ApiError.too_large(rt.config.limits.max_body_bytes)
        elif e.code == 415:
            err = ApiError.unsupported_media_type()
        elif e.code is not None and e.code < 500:
            err = ApiError.bad_request(f"the request could not be read ({e.name}); send it again")
        else:
            err = ApiError.internal(e.description or e.name)
        return api_error(err)

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> Response:
        log.error("request %s failed: %s %s", request.headers.get("x-request-id", "-"), request.method,
                  request.path, exc_info=e)
        return api_error(ApiError.internal(type(e).__name__))

    return app
