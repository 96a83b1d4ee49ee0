"""``GET /healthz``: liveness, for control's and the proxy's checks."""

from flask import Blueprint

from ..app import json_response
from ..guard import guards

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return json_response(200, {"status": "ok", "limits": guards().snapshot()})
