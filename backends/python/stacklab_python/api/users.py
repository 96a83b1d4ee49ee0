"""Users over REST; every call goes to the service (:mod:`stacklab_python.service`)."""

from flask import Blueprint, request

from .. import body
from ..app import json_response, runtime, session, trace
from ..errors import ApiError
from . import whole

bp = Blueprint("users", __name__, url_prefix="/api/users")

CREATE = {"username": (body.STR, True), "email": (body.STR, True), "password": (body.STR, True),
          "full_name": (body.STR, False)}
UPDATE = {"username": (body.STR, False), "email": (body.STR, False), "password": (body.STR, False),
          "full_name": (body.STR, False)}
VERIFY = {"password": (body.STR, True)}


def _body(spec: dict, what: str) -> dict:
    return body.fields(body.read_json(request, runtime().config.limits.max_body_bytes), spec, what)


def user_id(segment: str) -> int:
    message = "a user id is a positive whole number"
    id_ = whole(segment, "id", message)
    if id_ <= 0:
        raise ApiError.invalid("id", message)
    return id_


def _int_param(name: str) -> int | None:
    v = request.args.get(name)
    return None if v is None else whole(v, name, f"{name} must be a whole number")


@bp.post("")
def create():
    b = _body(CREATE, "a new user")
    user = session().create(b["username"], b["email"], b["password"], b.get("full_name"), trace())
    return json_response(201, user)


@bp.get("")
def search():
    page = session().list(request.args.get("q"), _int_param("limit"), _int_param("offset"), trace())
    return json_response(200, page.to_json())


@bp.get("/<segment>")
def get(segment: str):
    return json_response(200, session().get(user_id(segment), trace()))


@bp.patch("/<segment>")
def update(segment: str):
    id_ = user_id(segment)
    return json_response(200, session().update(id_, _body(UPDATE, "the changes"), trace()))


@bp.delete("/<segment>")
def delete(segment: str):
    session().delete(user_id(segment), trace())
    return json_response(200, {"deleted": True})


@bp.post("/<segment>/verify-password")
def verify_password(segment: str):
    id_ = user_id(segment)
    b = _body(VERIFY, "a password")
    return json_response(200, {"ok": session().verify_password(id_, b["password"], trace())})
