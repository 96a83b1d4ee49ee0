"""The session's cache: what it holds, its policy (switchable where the engine allows), a flush."""

from flask import Blueprint, request

from .. import body
from ..app import json_response, runtime, session
from ..cache import MAX_LISTED_ITEMS
from ..errors import CacheError, from_cache_error

bp = Blueprint("cache", __name__, url_prefix="/api/cache")


def view():
    c = session().cache
    try:
        items = c.items(MAX_LISTED_ITEMS)
        stats = c.stats()
        policy = c.policy()
    except CacheError as e:
        raise from_cache_error(e) from None
    return json_response(200, {
        "engine": c.engine, "policy": policy["policy"], "policies": policy["policies"],
        "changeable": policy["changeable"], "note": policy["note"], "items": items, "stats": stats,
    })


@bp.get("")
def show():
    return view()


@bp.put("/policy")
def set_policy():
    b = body.fields(body.read_json(request, runtime().config.limits.max_body_bytes),
                    {"policy": (body.STR, True)}, "a policy")
    # One canonical name everywhere (CONTRACT.md, "Cache policies"): " ALLKEYS-LFU " is applied,
    # shown and reported to control as "allkeys-lfu", so the engine and the registry agree.
    policy = b["policy"].strip().lower()
    try:
        session().cache.set_policy(policy)
    except CacheError as e:
        raise from_cache_error(e) from None
    runtime().sessions.cache_policy_changed(session().code, policy)
    return view()


@bp.delete("")
def flush():
    try:
        session().cache.flush()
    except CacheError as e:
        raise from_cache_error(e) from None
    return view()
