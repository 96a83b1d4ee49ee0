"""``DELETE /internal/sessions/<code>``: control tells the instance to forget a session (its
descriptor and connections), with the runtime credential as a bearer token."""

from flask import Blueprint, request

from ..app import json_response, runtime
from ..errors import ApiError

bp = Blueprint("internal", __name__, url_prefix="/internal")


@bp.delete("/sessions/<code>")
def forget(code: str):
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[len("Bearer "):]:
        raise ApiError.unauthorized()
    if not runtime().credential_matches(auth[len("Bearer "):]):
        raise ApiError.forbidden()
    runtime().sessions.close(code)
    return json_response(200, {"closed": code})
