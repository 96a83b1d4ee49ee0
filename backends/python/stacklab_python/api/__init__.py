"""The blueprints: one per part of the contract.

| blueprint | routes |
|---|---|
| :mod:`.health` | ``GET /healthz`` |
| :mod:`.internal` | ``DELETE /internal/sessions/<code>`` (runtime credential) |
| :mod:`.users` | ``/api/users``, ``/api/users/<id>``, ``/api/users/<id>/verify-password`` |
| :mod:`.cache` | ``GET /api/cache``, ``PUT /api/cache/policy``, ``DELETE /api/cache`` |
| :mod:`.analysis` | ``GET /api/analysis``, ``POST /api/analysis/benchmark`` |
| :mod:`.graphql` | ``GET /graphql`` (GraphiQL), ``POST /graphql`` |
"""

import re

from ..errors import ApiError

_INT = re.compile(r"[+-]?[0-9]+")
I64_MAX = 2**63 - 1


def whole(text: str, field: str, message: str) -> int:
    """A decimal i64 as Rust's ``str::parse`` reads it (optional sign, ASCII digits only)."""
    if not _INT.fullmatch(text) or not -I64_MAX - 1 <= int(text) <= I64_MAX:
        raise ApiError.invalid(field, message)
    return int(text)
