"""``/graphql``: queries and mutations on POST, over the same service as REST.

POST only: another method is ``405 method_not_allowed`` (no GraphiQL page; it loaded its
scripts from a public CDN, and stacklab's console runs GraphQL)."""

from flask import Blueprint, request

from .. import body, gql
from ..app import json_response, runtime, session, trace
from ..errors import ApiError

bp = Blueprint("graphql", __name__)

REQUEST = {"query": (body.STR, False), "operationName": (body.STR, False),
           "variables": (body.OBJECT, False), "extensions": (body.OBJECT, False)}


@bp.post("/graphql")
def run():
    limits = runtime().config.limits
    # Unknown fields are ignored, as async-graphql's request type does.
    b = body.fields(body.read_json(request, limits.max_body_bytes), REQUEST, "a GraphQL request", strict=False)
    out = gql.run(limits, b.get("query", ""), b.get("operationName"), b.get("variables"),
                  {"session": session(), "trace": trace()})
    if not out.refused:
        return json_response(200, out.response)
    errors = out.response["errors"]
    more = "" if len(errors) == 1 else f" (and {len(errors) - 1} more)"
    refused = ApiError.invalid(
        "query",
        f"the GraphQL request was refused before it ran: {errors[0]['message']}{more}; fix the query and send it again",
    )
    return json_response(400, {**out.response, **refused.body()})
