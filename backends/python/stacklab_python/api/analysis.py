"""Size, rows, the cache's hit ratio, and the on-demand benchmark."""

from flask import Blueprint, request

from .. import analysis, body
from ..app import json_response, runtime, session

bp = Blueprint("analysis", __name__, url_prefix="/api/analysis")


@bp.get("")
def overview():
    return json_response(200, analysis.overview(session()))


@bp.post("/benchmark")
def benchmark():
    limits = runtime().config.limits
    b = body.fields(body.read_json(request, limits.max_body_bytes),
                    {"reads": (body.U32, False), "writes": (body.U32, False)}, "a benchmark")
    return json_response(200, analysis.benchmark(session(), limits, b.get("reads", 200), b.get("writes", 200)))
