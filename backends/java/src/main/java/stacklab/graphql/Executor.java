package stacklab.graphql;

import com.fasterxml.jackson.databind.JsonNode;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import stacklab.graphql.Ast.*;
import stacklab.http.ApiError;
import stacklab.users.Session;
import stacklab.users.Trace;

/**
 * Runs a validated operation against the users service: variables coerced to their declared
 * types, fields collected (fragments inlined, {@code @skip}/{@code @include} applied, equal
 * response keys merged), root fields resolved by the same {@link Session} calls as REST —
 * mutations one after another — and values completed by their types, a null in a non-null
 * position propagating to the nearest nullable parent ({@code data} itself for root fields).
 * A resolver's {@link ApiError} becomes a field error carrying its message, code and field.
 */
final class Executor {
    /** Request errors: the operation cannot run (bad variables, unknown operation name). */
    static final class RequestError extends Exception {
        final List<GraphQLError> errors;

        RequestError(List<GraphQLError> errors) {
            super(errors.get(0).message(), null, false, false);
            this.errors = errors;
        }

        RequestError(String message, Loc loc) { this(List.of(new GraphQLError(message, loc))); }
    }

    /** A null reached a non-null position: the parent becomes null. */
    private static final class Null extends Exception {
        Null() { super(null, null, false, false); }
    }

    private static final Object ABSENT = new Object();

    private final Document doc;
    private final Map<String, Fragment> fragments;
    private final Session session;
    private final Trace trace;
    private final List<GraphQLError> errors = new ArrayList<>();
    private Map<String, Object> vars;

    private Executor(Document doc, Session session, Trace trace) {
        this.doc = doc;
        this.fragments = Validator.fragmentsOf(doc);
        this.session = session;
        this.trace = trace;
    }

    record Result(Object data, List<GraphQLError> errors) {}

    static Operation select(Document doc, String operationName) throws RequestError {
        List<Operation> ops = doc.definitions().stream().filter(d -> d instanceof Operation).map(d -> (Operation) d).toList();
        if (operationName != null) {
            return ops.stream().filter(o -> operationName.equals(o.name())).findFirst()
                    .orElseThrow(() -> new RequestError("Unknown operation named \"" + operationName + "\".", null));
        }
        if (ops.isEmpty()) throw new RequestError("Must provide an operation.", null);
        if (ops.size() > 1) throw new RequestError("Must provide operation name if query contains multiple operations.", null);
        return ops.get(0);
    }

    static Result run(Document doc, Operation op, JsonNode variables, Session session, Trace trace) throws RequestError {
        Executor e = new Executor(doc, session, trace);
        e.vars = coerceVariables(op, variables);
        String root = op.kind().equals("mutation") ? "Mutation" : "Query";
        Object data;
        try {
            data = e.object(root, null, op.selections(), new ArrayList<>(), op.kind().equals("mutation"));
        } catch (Null n) {
            data = null;
        }
        return new Result(data, e.errors);
    }

    // --- variables ---------------------------------------------------------------------------

    private static Map<String, Object> coerceVariables(Operation op, JsonNode given) throws RequestError {
        Map<String, Object> out = new LinkedHashMap<>();
        List<GraphQLError> problems = new ArrayList<>();
        for (VarDef v : op.variables()) {
            boolean has = given != null && given.isObject() && given.has(v.name());
            if (!has) {
                if (v.defaultValue() != null) out.put(v.name(), literal(v.defaultValue(), v.type(), Map.of()));
                else if (v.type() instanceof NonNull) {
                    problems.add(new GraphQLError("Variable \"$" + v.name() + "\" of required type \"" + v.type() + "\" was not provided.", v.loc()));
                }
                continue;
            }
            try {
                out.put(v.name(), fromJson(given.get(v.name()), v.type(), ""));
            } catch (IllegalArgumentException e) {
                problems.add(new GraphQLError("Variable \"$" + v.name() + "\" got invalid value " + given.get(v.name()) + "; " + e.getMessage(), v.loc()));
            }
        }
        if (!problems.isEmpty()) throw new RequestError(problems);
        return out;
    }

    private static Object fromJson(JsonNode j, Type t, String at) {
        if (t instanceof NonNull nn) {
            if (j == null || j.isNull()) throw new IllegalArgumentException("Expected non-nullable type \"" + t + "\" not to be null" + at + ".");
            return fromJson(j, nn.of(), at);
        }
        if (j == null || j.isNull()) return null;
        if (t instanceof ListOf l) {
            List<Object> items = new ArrayList<>();
            if (j.isArray()) for (int i = 0; i < j.size(); i++) items.add(fromJson(j.get(i), l.of(), at + " at [" + i + "]"));
            else items.add(fromJson(j, l.of(), at));
            return items;
        }
        String n = ((Named) t).name();
        switch (n) {
            case "Int":
                if (!j.isIntegralNumber() || !j.canConvertToLong()) throw new IllegalArgumentException("Int cannot represent value: " + j + at + " (a 64-bit whole number is expected)");
                return j.asLong();
            case "String":
                if (!j.isTextual()) throw new IllegalArgumentException("String cannot represent a non string value: " + j + at);
                return j.asText();
            case "Boolean":
                if (!j.isBoolean()) throw new IllegalArgumentException("Boolean cannot represent a non boolean value: " + j + at);
                return j.asBoolean();
            default:
                Map<String, Type> fields = Schema.INPUTS.get(n);
                if (!j.isObject()) throw new IllegalArgumentException("Expected type \"" + n + "\" to be an object" + at + ".");
                Map<String, Object> m = new LinkedHashMap<>();
                for (var it = j.fieldNames(); it.hasNext(); ) {
                    String k = it.next();
                    if (!fields.containsKey(k)) throw new IllegalArgumentException("Field \"" + k + "\" is not defined by type \"" + n + "\"" + at + ".");
                }
                for (var e : fields.entrySet()) {
                    if (j.has(e.getKey())) m.put(e.getKey(), fromJson(j.get(e.getKey()), e.getValue(), at + " at \"" + e.getKey() + "\""));
                    else if (e.getValue() instanceof NonNull) {
                        throw new IllegalArgumentException("Field \"" + e.getKey() + "\" of required type \"" + e.getValue() + "\" was not provided" + at + ".");
                    }
                }
                return m;
        }
    }

    /** A literal's value (validated already); a variable not given is ABSENT. */
    private static Object literal(Value v, Type t, Map<String, Object> vars) {
        if (v instanceof Var x) return vars.containsKey(x.name()) ? vars.get(x.name()) : ABSENT;
        if (t instanceof NonNull nn) return literal(v, nn.of(), vars);
        if (v instanceof NullV) return null;
        if (t instanceof ListOf l) {
            List<Object> items = new ArrayList<>();
            if (v instanceof ListV lv) {
                for (Value i : lv.items()) {
                    Object o = literal(i, l.of(), vars);
                    items.add(o == ABSENT ? null : o);
                }
            } else items.add(literal(v, l.of(), vars));
            return items;
        }
        if (v instanceof IntV i) return new BigInteger(i.text()).longValueExact();
        if (v instanceof StringV s) return s.value();
        if (v instanceof BoolV b) return b.value();
        ObjectV o = (ObjectV) v;
        Map<String, Type> fields = Schema.INPUTS.get(((Named) t).name());
        Map<String, Object> m = new LinkedHashMap<>();
        for (ObjField f : o.fields()) {
            Object x = literal(f.value(), fields.get(f.name()), vars);
            if (x != ABSENT) m.put(f.name(), x);
        }
        return m;
    }

    // --- execution ---------------------------------------------------------------------------

    private boolean included(List<Directive> dirs) {
        for (Directive d : dirs) {
            Object cond = d.args().isEmpty() ? Boolean.FALSE : literal(d.args().get(0).value(), new Named("Boolean"), vars);
            boolean c = Boolean.TRUE.equals(cond);
            if (d.name().equals("skip") && c) return false;
            if (d.name().equals("include") && !c) return false;
        }
        return true;
    }

    private void collect(String type, List<Selection> sels, Map<String, List<Field>> out, Set<String> visited) {
        for (Selection s : sels) {
            if (s instanceof Field f) {
                if (included(f.directives())) out.computeIfAbsent(f.key(), k -> new ArrayList<>()).add(f);
            } else if (s instanceof Inline i) {
                if (included(i.directives()) && (i.typeCondition() == null || i.typeCondition().equals(type))) collect(type, i.selections(), out, visited);
            } else if (s instanceof Spread sp) {
                if (!included(sp.directives()) || !visited.add(sp.name())) continue;
                Fragment f = fragments.get(sp.name());
                if (f != null && f.typeCondition().equals(type) && included(f.directives())) collect(type, f.selections(), out, visited);
            }
        }
    }

    @SuppressWarnings("unchecked")
    private Map<String, Object> object(String type, Object source, List<Selection> sels, List<Object> path, boolean serial) throws Null {
        Map<String, List<Field>> fields = new LinkedHashMap<>();
        collect(type, sels, fields, new HashSet<>());
        Map<String, Object> out = new LinkedHashMap<>();
        boolean nulled = false;
        for (var e : fields.entrySet()) {
            Field f = e.getValue().get(0);
            List<Object> here = new ArrayList<>(path);
            here.add(e.getKey());
            if (f.name().equals("__typename")) {
                out.put(e.getKey(), type);
                continue;
            }
            Schema.FieldDef def = Schema.field(type, f.name());
            List<Selection> sub = new ArrayList<>();
            for (Field same : e.getValue()) if (same.selections() != null) sub.addAll(same.selections());
            try {
                Object raw = source == null ? resolveRoot(f, here) : ((Map<String, Object>) source).get(f.name());
                out.put(e.getKey(), complete(def.type(), raw, sub, here));
            } catch (Null n) {
                nulled = true;
                if (serial) break; // a mutation that failed stops the ones after it
            }
        }
        if (nulled) throw new Null();
        return out;
    }

    private Object complete(Type t, Object value, List<Selection> sub, List<Object> path) throws Null {
        if (t instanceof NonNull nn) {
            Object v = complete(nn.of(), value, sub, path);
            if (v == null) throw new Null();
            return v;
        }
        if (value == null) return null;
        if (t instanceof ListOf l) {
            List<Object> out = new ArrayList<>();
            List<?> items = (List<?>) value;
            for (int i = 0; i < items.size(); i++) {
                List<Object> here = new ArrayList<>(path);
                here.add(i);
                out.add(complete(l.of(), items.get(i), sub, here));
            }
            return out;
        }
        String n = ((Named) t).name();
        if (Schema.SCALARS.contains(n)) return value;
        return object(n, value, sub, path, false);
    }

    private Object arg(Field f, String name, Type t) {
        for (Arg a : f.args()) {
            if (a.name().equals(name)) {
                Object v = literal(a.value(), t, vars);
                return v == ABSENT ? null : v;
            }
        }
        return null;
    }

    @SuppressWarnings("unchecked")
    private Object resolveRoot(Field f, List<Object> path) throws Null {
        Map<String, Type> args = Schema.field(f.name().equals("users") || f.name().equals("user") ? "Query" : "Mutation", f.name()).args();
        try {
            switch (f.name()) {
                case "users": {
                    Map<String, Object> page = session.list((String) arg(f, "q", args.get("q")), (Long) arg(f, "limit", args.get("limit")),
                            (Long) arg(f, "offset", args.get("offset")), trace);
                    return graphPage(page);
                }
                case "user": {
                    long id = (Long) arg(f, "id", args.get("id"));
                    if (id <= 0) throw ApiError.notFound(id);
                    return graphUser(session.get(id, trace));
                }
                case "createUser": {
                    Map<String, Object> in = (Map<String, Object>) arg(f, "input", args.get("input"));
                    return graphUser(session.create((String) in.get("username"), (String) in.get("email"), (String) in.get("password"),
                            (String) in.get("fullName"), trace));
                }
                case "updateUser": {
                    long id = (Long) arg(f, "id", args.get("id"));
                    Map<String, Object> in = (Map<String, Object>) arg(f, "input", args.get("input"));
                    return graphUser(session.update(id, new Session.Update((String) in.get("username"), (String) in.get("email"),
                            (String) in.get("password"), (String) in.get("fullName")), trace));
                }
                case "deleteUser": {
                    session.delete((Long) arg(f, "id", args.get("id")), trace);
                    return Boolean.TRUE;
                }
                case "verifyPassword":
                    return session.verifyPassword((Long) arg(f, "id", args.get("id")), (String) arg(f, "password", args.get("password")), trace);
                default:
                    throw ApiError.internal("no resolver for " + f.name());
            }
        } catch (ApiError e) {
            if (e.status() >= 500 && !e.code().equals("busy")) System.err.println("GraphQL field " + f.name() + " failed: " + e.detail());
            Map<String, Object> ext = new LinkedHashMap<>();
            ext.put("code", e.code());
            if (e.field() != null) ext.put("field", e.field());
            errors.add(new GraphQLError(e.getMessage(), List.of(f.loc()), path, ext));
            throw new Null();
        }
    }

    private static final Map<String, String> USER_FIELDS = Map.of("id", "id", "username", "username", "email", "email",
            "fullName", "full_name", "storedPassword", "stored_password", "storedEmail", "stored_email",
            "createdAt", "created_at", "updatedAt", "updated_at");

    private static Map<String, Object> graphUser(Map<String, Object> u) {
        Map<String, Object> m = new LinkedHashMap<>();
        USER_FIELDS.forEach((g, r) -> m.put(g, u.get(r)));
        return m;
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> graphPage(Map<String, Object> p) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("items", ((List<Map<String, Object>>) p.get("items")).stream().map(Executor::graphUser).toList());
        m.put("total", p.get("total"));
        m.put("limit", p.get("limit"));
        m.put("offset", p.get("offset"));
        return m;
    }
}
