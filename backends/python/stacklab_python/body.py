"""JSON request bodies: read within the limit, parsed strictly, checked field by field.

The rules are CONTRACT.md §4 (the Rust runtime's serde behaviour): the media type must be
``application/json``; the body must be UTF-8 JSON holding one object; unknown, missing and
duplicate fields are named in ``field``; a value of the wrong type is a 400 naming its field;
``null`` for an optional field means absent. Strings must be valid Unicode (a lone surrogate
escape such as ``"\\ud800"`` is refused, as serde refuses it).
"""

from __future__ import annotations

import json
import math

from flask import Request

from .errors import ApiError

STR = "a string"
U32 = "a non-negative whole number below 2^32"
OBJECT = "an object"


class _Duplicates(dict):
    """An object whose first duplicate key is remembered (``json`` would keep the last silently)."""

    duplicate: str | None = None


def _pairs(pairs: list[tuple[str, object]]) -> dict:
    d = _Duplicates()
    for k, v in pairs:
        if k in d and d.duplicate is None:
            d.duplicate = k
        d[k] = v
    return d


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def is_json(request: Request) -> bool:
    media = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip()
    return media.lower() == "application/json"


def read_json(request: Request, max_bytes: int) -> object:
    """The parsed body; 415, 413 or 400 as the contract says."""
    if not is_json(request):
        raise ApiError.unsupported_media_type()
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiError.too_large(max_bytes)
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError.too_large(max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError.bad_request("the body is not valid UTF-8; send UTF-8 JSON") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise ApiError.bad_request(f"the body is not the JSON this takes: {e}") from None
    _check_unicode(value)
    return value


def _check_unicode(value: object) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError.bad_request(
                    "the body is not the JSON this takes: a string holds a lone surrogate escape"
                ) from None
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, float) and not math.isfinite(v):
            raise ApiError.bad_request("the body is not the JSON this takes: a number is out of range")


def fields(value: object, spec: dict[str, tuple[str, bool]], what: str, strict: bool = True) -> dict:
    """Checks an object against ``{name: (type, required)}``; returns only the given fields
    (``null`` dropped). ``strict`` refuses unknown fields."""
    if not isinstance(value, dict):
        raise ApiError.bad_request(f"the body is not the JSON this takes: expected {what} as a JSON object")
    dup = getattr(value, "duplicate", None)
    if dup is not None and (strict or dup in spec):
        raise ApiError.invalid(dup, f"duplicate field `{dup}`; fix the body and send it again")
    if strict:
        for k in value:
            if k not in spec:
                raise ApiError.invalid(
                    k,
                    f"unknown field `{k}`, expected one of {', '.join(f'`{n}`' for n in spec)}; "
                    "fix the body and send it again",
                )
    out = {}
    for name, (kind, required) in spec.items():
        v = value.get(name)
        if v is None:
            if required:
                raise ApiError.invalid(name, f"missing field `{name}`; fix the body and send it again")
            continue
        if not _is(kind, v):
            got = "an integer out of range" if kind == U32 and _kind_of(v) == "an integer" else _kind_of(v)
            raise ApiError.bad_request(f"the body is not the JSON this takes: `{name}` must be {kind}, not {got}", name)
        out[name] = v
    return out


def _is(kind: str, v: object) -> bool:
    if kind == STR:
        return isinstance(v, str)
    if kind == U32:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32
    if kind == OBJECT:
        return isinstance(v, dict)
    raise AssertionError(kind)


def _kind_of(v: object) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a floating point number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return "null"
