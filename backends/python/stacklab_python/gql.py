"""GraphQL over the same service as REST (CONTRACT.md §7), on graphql-core 3.

The schema is the Rust runtime's (async-graphql), field for field, with its 64-bit ``Int``
(``createdAt`` is Unix milliseconds, beyond GraphQL's usual 32 bits). These limits are checked
before anything runs (validation included), in the Rust runtime's order and with its counting
rules, so one query is refused alike by every runtime:

1. fields written out in the document (aliases and ``__typename`` included; a fragment's
   fields counted once, where it is defined) ≤ ``graphql_max_fields``;
2. fields once the operations' fragments are spread ≤ ``graphql_max_fields`` too (a fragment
   bomb of 2^24 selections is refused here, having cost one pass over the document);
3. complexity ≤ ``graphql_max_complexity``: over every operation with fragments inlined, a field
   costs 1 + its children, ``users`` costs 10 × its children, ``__typename`` costs nothing;
4. depth ≤ ``graphql_max_depth``: the longest chain of nested fields (``__typename`` not counted).

A request refused before it ran gets a 400 from the HTTP layer; errors of fields that ran keep
GraphQL's 200 and carry the REST error's ``code`` and ``field`` in ``extensions``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from graphql import (
    DocumentNode, FieldNode, FragmentDefinitionNode, FragmentSpreadNode, GraphQLArgument,
    GraphQLBoolean, GraphQLError, GraphQLField, GraphQLInputField, GraphQLInputObjectType, GraphQLList,
    GraphQLNonNull, GraphQLObjectType, GraphQLScalarType, GraphQLSchema, GraphQLString,
    InlineFragmentNode, IntValueNode, NullValueNode, ObjectValueNode, OperationDefinitionNode,
    OperationType, SelectionSetNode, VariableNode, execute, get_named_type, parse, validate,
)
from graphql.error import GraphQLSyntaxError

from .config import Limits
from .errors import ApiError
from .guard import guards

log = logging.getLogger(__name__)

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not I64_MIN <= value <= I64_MAX:
        raise GraphQLError(f"Int cannot represent value: {value!r} (a 64-bit whole number is expected)")
    return value


def _int_literal(node, _variables=None) -> int:
    if not isinstance(node, IntValueNode):
        raise GraphQLError("Int cannot represent a non-integer value")
    return _int(int(node.value))


class _SchemaScalar(GraphQLScalarType):
    """A scalar allowed to take a standard scalar's name. graphql-core refuses to redefine
    `Int`, but the contract's `Int` is async-graphql's: every integer type is named `Int`, and
    i64 has 64 bits. The standard 32-bit `GraphQLInt` appears nowhere in this schema."""

    reserved_types: dict = {}


Int = _SchemaScalar(
    "Int", description="A 64-bit signed whole number.",
    serialize=_int, parse_value=_int, parse_literal=_int_literal,
)


def _nn(t):
    return GraphQLNonNull(t)


def _api_error(e: ApiError) -> GraphQLError:
    ext = {"code": e.code}
    if e.field is not None:
        ext["field"] = e.field
    return GraphQLError(e.message, extensions=ext)


def _resolver(fn):
    """Runs a service call with the request's session and trace; errors become GraphQL errors
    with the REST error's message, code and field (never an internal detail)."""

    def resolve(_root, info, **args):
        ctx = info.context
        try:
            return fn(ctx["session"], ctx["trace"], **args)
        except ApiError as e:
            if e.status >= 500:
                log.warning("GraphQL field %s failed: %s", info.field_name, getattr(e, "detail", e.message))
            raise _api_error(e) from None
        except GraphQLError:
            raise
        except Exception:
            log.exception("GraphQL field %s failed", info.field_name)
            raise _api_error(ApiError.internal("resolver")) from None

    return resolve


def _user_field(t, key: str) -> GraphQLField:
    return GraphQLField(t, resolve=lambda u, _info: u[key])


UserType = GraphQLObjectType("User", lambda: {
    "id": _user_field(_nn(Int), "id"),
    "username": _user_field(_nn(GraphQLString), "username"),
    "email": _user_field(_nn(GraphQLString), "email"),
    "fullName": _user_field(_nn(GraphQLString), "full_name"),
    "storedPassword": _user_field(_nn(GraphQLString), "stored_password"),
    "storedEmail": _user_field(_nn(GraphQLString), "stored_email"),
    "createdAt": _user_field(_nn(Int), "created_at"),
    "updatedAt": _user_field(_nn(Int), "updated_at"),
})

UserPageType = GraphQLObjectType("UserPage", lambda: {
    "items": _user_field(_nn(GraphQLList(_nn(UserType))), "items"),
    "total": _user_field(_nn(Int), "total"),
    "limit": _user_field(_nn(Int), "limit"),
    "offset": _user_field(_nn(Int), "offset"),
})

CreateUserInput = GraphQLInputObjectType("CreateUserInput", {
    "username": GraphQLInputField(_nn(GraphQLString)),
    "email": GraphQLInputField(_nn(GraphQLString)),
    "password": GraphQLInputField(_nn(GraphQLString)),
    "fullName": GraphQLInputField(GraphQLString, out_name="full_name"),
})

UpdateUserInput = GraphQLInputObjectType("UpdateUserInput", {
    "username": GraphQLInputField(GraphQLString),
    "email": GraphQLInputField(GraphQLString),
    "password": GraphQLInputField(GraphQLString),
    "fullName": GraphQLInputField(GraphQLString, out_name="full_name"),
})

Query = GraphQLObjectType("Query", {
    "users": GraphQLField(
        _nn(UserPageType),
        args={"q": GraphQLArgument(GraphQLString), "limit": GraphQLArgument(Int), "offset": GraphQLArgument(Int)},
        resolve=_resolver(lambda s, t, q=None, limit=None, offset=None: s.list(q, limit, offset, t).to_json()),
        description="Users whose username (or email) contains `q`, case-insensitive; a page of them.",
    ),
    "user": GraphQLField(
        _nn(UserType), args={"id": GraphQLArgument(_nn(Int))},
        resolve=_resolver(lambda s, t, id: s.get(id, t)),
    ),
})

Mutation = GraphQLObjectType("Mutation", {
    "createUser": GraphQLField(
        _nn(UserType), args={"input": GraphQLArgument(_nn(CreateUserInput))},
        resolve=_resolver(lambda s, t, input: s.create(
            input["username"], input["email"], input["password"], input.get("full_name"), t)),
    ),
    "updateUser": GraphQLField(
        _nn(UserType), args={"id": GraphQLArgument(_nn(Int)), "input": GraphQLArgument(_nn(UpdateUserInput))},
        resolve=_resolver(lambda s, t, id, input: s.update(id, input, t)),
    ),
    "deleteUser": GraphQLField(
        _nn(GraphQLBoolean), args={"id": GraphQLArgument(_nn(Int))},
        resolve=_resolver(lambda s, t, id: s.delete(id, t) or True),
    ),
    "verifyPassword": GraphQLField(
        _nn(GraphQLBoolean), args={"id": GraphQLArgument(_nn(Int)), "password": GraphQLArgument(_nn(GraphQLString))},
        resolve=_resolver(lambda s, t, id, password: s.verify_password(id, password, t)),
    ),
})

SCHEMA = GraphQLSchema(query=Query, mutation=Mutation)


# --- the limits ------------------------------------------------------------------------------
#
# Fragments spread into one another multiply: 48 fragments of two spreads each stand for 2^24
# selections in a document of 4 KB. Every count below therefore takes each fragment once and
# remembers its result (a fragment's numbers do not depend on where it is spread: its type
# condition, not the spread's place, is its parent type), so counting is linear in the size of
# the document, whatever it spreads. A spread of a fragment still being counted (a cycle) counts
# 0 here; validation refuses cycles afterwards with its own error, and an unknown fragment
# likewise. The counts recurse once per level of nesting or of spreading; a document too deep
# for Python's stack is refused by ``run`` (``RecursionError``).

# Where a spread-out count stops being a number worth printing (Rust's saturated usize).
COUNTLESS = 2**64 - 1


def _fragments(doc: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}


def count_fields(doc: DocumentNode) -> int:
    """Field selections written out: every operation and fragment definition, nested ones
    included, aliases and ``__typename`` included; a spread counts 0."""

    def count(s: SelectionSetNode | None) -> int:
        n = 0
        for sel in (s.selections if s else ()):
            if isinstance(sel, FieldNode):
                n += 1 + count(sel.selection_set)
            elif isinstance(sel, InlineFragmentNode):
                n += count(sel.selection_set)
        return n

    return sum(
        count(d.selection_set) for d in doc.definitions
        if isinstance(d, (OperationDefinitionNode, FragmentDefinitionNode))
    )


def count_hashes(doc: DocumentNode, variables: dict | None) -> int:
    """Fields that hash a password (CONTRACT.md §9a): ``verifyPassword``, ``createUser``, and an
    ``updateUser`` whose input sets a non-null password, inline or through variables (a variable
    not given counts); over every operation and fragment, aliases included."""
    variables = variables if isinstance(variables, dict) else {}

    def sets_password(f: FieldNode) -> bool:
        arg = next((a.value for a in f.arguments or () if a.name.value == "input"), None)
        if isinstance(arg, ObjectValueNode):
            v = next((x.value for x in arg.fields if x.name.value == "password"), None)
            if v is None or isinstance(v, NullValueNode):
                return False
            if isinstance(v, VariableNode):
                return variables.get(v.name.value, 0) is not None
            return True
        if isinstance(arg, VariableNode):
            if arg.name.value not in variables:
                return True
            given = variables[arg.name.value]
            return isinstance(given, dict) and given.get("password") is not None
        return False

    def count(s: SelectionSetNode | None) -> int:
        n = 0
        for sel in (s.selections if s else ()):
            if isinstance(sel, FieldNode):
                name = sel.name.value
                own = 1 if name in ("verifyPassword", "createUser") else \
                    int(name == "updateUser" and sets_password(sel))
                n += own + count(sel.selection_set)
            elif isinstance(sel, InlineFragmentNode):
                n += count(sel.selection_set)
        return n

    return sum(
        count(d.selection_set) for d in doc.definitions
        if isinstance(d, (OperationDefinitionNode, FragmentDefinitionNode))
    )


def count_spread_fields(doc: DocumentNode) -> int:
    """Field selections of every operation with its fragment spreads spread out (aliases and
    ``__typename`` included), each fragment counted once and remembered; at most
    ``COUNTLESS``."""
    fragments = _fragments(doc)
    counted: dict[str, int] = {}
    open_: set[str] = set()

    def count(s: SelectionSetNode | None) -> int:
        n = 0
        for sel in (s.selections if s else ()):
            if isinstance(sel, FieldNode):
                n += 1 + count(sel.selection_set)
            elif isinstance(sel, InlineFragmentNode):
                n += count(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode):
                n += fragment(sel.name.value)
        return n

    def fragment(name: str) -> int:
        if name in counted:
            return counted[name]
        f = fragments.get(name)
        if f is None or name in open_:
            return 0
        open_.add(name)
        n = counted[name] = min(count(f.selection_set), COUNTLESS)
        open_.discard(name)
        return n

    total = sum(count(d.selection_set) for d in doc.definitions if isinstance(d, OperationDefinitionNode))
    return min(total, COUNTLESS)


def complexity_and_depth(doc: DocumentNode) -> tuple[int, int]:
    """async-graphql's numbers: over every operation, fragments inlined, ``__typename`` not
    visited. Each fragment's complexity and depth (below the spread) are computed once."""
    fragments = _fragments(doc)
    known: dict[str, tuple[int, int]] = {}
    open_: set[str] = set()

    def walk(s: SelectionSetNode | None, parent) -> tuple[int, int]:
        """(complexity, depth) of a selection set: depth is its deepest chain of fields."""
        total = depth = 0
        for sel in (s.selections if s else ()):
            if isinstance(sel, FieldNode):
                name = sel.name.value
                if name == "__typename":
                    continue
                field = parent.fields.get(name) if isinstance(parent, GraphQLObjectType) else None
                child_type = get_named_type(field.type) if field is not None else None
                children, below = walk(sel.selection_set, child_type)
                total += 10 * children if parent is Query and name == "users" else 1 + children
                depth = max(depth, 1 + below)
            elif isinstance(sel, InlineFragmentNode):
                t = SCHEMA.get_type(sel.type_condition.name.value) if sel.type_condition else parent
                c, d = walk(sel.selection_set, t)
                total, depth = total + c, max(depth, d)
            elif isinstance(sel, FragmentSpreadNode):
                c, d = fragment(sel.name.value)
                total, depth = total + c, max(depth, d)
        return total, depth

    def fragment(name: str) -> tuple[int, int]:
        if name in known:
            return known[name]
        f = fragments.get(name)
        if f is None or name in open_:
            return 0, 0
        open_.add(name)
        known[name] = walk(f.selection_set, SCHEMA.get_type(f.type_condition.name.value))
        open_.discard(name)
        return known[name]

    complexity = max_depth = 0
    for d in doc.definitions:
        if isinstance(d, OperationDefinitionNode):
            root = {OperationType.QUERY: Query, OperationType.MUTATION: Mutation}.get(d.operation)
            c, depth = walk(d.selection_set, root)
            complexity, max_depth = complexity + c, max(max_depth, depth)
    return complexity, max_depth


@dataclass
class Outcome:
    """What the HTTP layer answers: ``refused`` (400) or not, and the GraphQL response."""

    refused: bool
    response: dict


def _refused(errors: list[GraphQLError]) -> Outcome:
    return Outcome(True, {"data": None, "errors": [e.formatted for e in errors]})


def run(limits: Limits, query: str, operation_name: str | None, variables: dict | None, context: dict) -> Outcome:
    try:
        doc = parse(query)
    except GraphQLSyntaxError as e:
        return _refused([e])
    except RecursionError:
        return _refused([GraphQLError("the query is nested too deeply to be parsed")])
    try:
        fields = count_fields(doc)
        if fields > limits.graphql_max_fields:
            return _refused([GraphQLError(
                f"the query selects {fields} fields (aliases included); at most {limits.graphql_max_fields} are allowed"
            )])
        spread = count_spread_fields(doc)
        if spread > limits.graphql_max_fields:
            return _refused([GraphQLError(
                f"the query selects {'countless' if spread == COUNTLESS else spread} fields once its fragments "
                f"are spread (aliases included); at most {limits.graphql_max_fields} are allowed"
            )])
        hashes = count_hashes(doc, variables)
        if hashes > limits.graphql_max_hashes:
            guards().graphql_refused()
            return _refused([GraphQLError(
                f"the query asks for {hashes} password hashes (verifyPassword, createUser, "
                "updateUser with a password; aliases included); at most "
                f"{limits.graphql_max_hashes} are allowed in one request, so send the rest in "
                "further requests"
            )])
        complexity, depth = complexity_and_depth(doc)
        if complexity > limits.graphql_max_complexity:
            return _refused([GraphQLError("Query is too complex.")])
        if depth > limits.graphql_max_depth:
            return _refused([GraphQLError("Query is nested too deep.")])
        errors = validate(SCHEMA, doc)
    except RecursionError:
        return _refused([GraphQLError("the query is nested too deeply to be checked")])
    if errors:
        return _refused(errors)
    result = execute(SCHEMA, doc, context_value=context, variable_values=variables, operation_name=operation_name)
    errors = result.errors or []
    if result.data is None and errors and all(not e.path for e in errors):
        return _refused(errors)
    response: dict = {"data": result.data}
    if errors:
        response["errors"] = [e.formatted for e in errors]
    return Outcome(False, response)

