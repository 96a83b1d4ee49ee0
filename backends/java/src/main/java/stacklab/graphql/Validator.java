package stacklab.graphql;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import stacklab.graphql.Ast.*;

/**
 * The validation rules a document must pass before it runs, against {@link Schema}: known
 * fields, arguments and types; required arguments and input fields; literal values of the right
 * type; leaf and object selections; fragments known, used, spread where their type fits, and
 * never in a cycle; variables defined, used, of input types and used where their type fits;
 * unique names; only {@code @skip} and {@code @include}. Messages follow graphql-js's wording.
 */
final class Validator {
    static final BigInteger I64_MIN = BigInteger.valueOf(Long.MIN_VALUE), I64_MAX = BigInteger.valueOf(Long.MAX_VALUE);

    private final Document doc;
    private final Map<String, Fragment> fragments = new LinkedHashMap<>();
    private final List<GraphQLError> errors = new ArrayList<>();

    private Validator(Document doc) {
        this.doc = doc;
    }

    static List<GraphQLError> validate(Document doc) {
        Validator v = new Validator(doc);
        v.run();
        return v.errors;
    }

    private void error(String message, Loc loc) { errors.add(new GraphQLError(message, loc)); }

    private void run() {
        Set<String> opNames = new HashSet<>();
        long operations = doc.definitions().stream().filter(d -> d instanceof Operation).count();
        for (Definition d : doc.definitions()) {
            if (d instanceof Operation o) {
                if (o.name() == null && operations > 1) error("This anonymous operation must be the only defined operation.", o.loc());
                if (o.name() != null && !opNames.add(o.name())) error("There can be only one operation named \"" + o.name() + "\".", o.loc());
            } else if (d instanceof Fragment f) {
                if (fragments.containsKey(f.name())) error("There can be only one fragment named \"" + f.name() + "\".", f.loc());
                else fragments.put(f.name(), f);
            }
        }
        for (Fragment f : fragments.values()) {
            if (!Schema.OBJECTS.containsKey(f.typeCondition())) {
                error("Unknown type \"" + f.typeCondition() + "\".", f.loc());
            }
        }
        // cycles
        Set<String> reported = new HashSet<>();
        for (Fragment f : fragments.values()) cycle(f.name(), new LinkedHashSet<>(), reported);
        Set<String> usedFragments = new HashSet<>();
        for (Definition d : doc.definitions()) {
            if (!(d instanceof Operation o)) continue;
            String root = switch (o.kind()) {
                case "query" -> "Query";
                case "mutation" -> "Mutation";
                default -> null;
            };
            if (root == null) {
                error("Schema is not configured to execute " + o.kind() + " operation.", o.loc());
                continue;
            }
            Map<String, VarDef> vars = new LinkedHashMap<>();
            for (VarDef v : o.variables()) {
                if (vars.putIfAbsent(v.name(), v) != null) error("There can be only one variable named \"$" + v.name() + "\".", v.loc());
                String tn = Schema.namedType(v.type());
                if (!Schema.SCALARS.contains(tn) && !Schema.INPUTS.containsKey(tn)) {
                    if (Schema.OBJECTS.containsKey(tn)) error("Variable \"$" + v.name() + "\" cannot be non-input type \"" + v.type() + "\".", v.loc());
                    else error("Unknown type \"" + tn + "\".", v.loc());
                } else if (v.defaultValue() != null) {
                    String m = checkValue(v.defaultValue(), v.type(), Map.of());
                    if (m != null) error(m, v.defaultValue().loc());
                }
            }
            Set<String> usedVars = new LinkedHashSet<>();
            Set<String> visited = new HashSet<>();
            directives(o.directives(), vars, usedVars);
            selections(o.selections(), root, vars, usedVars, visited);
            usedFragments.addAll(visited);
            for (String u : usedVars) if (!vars.containsKey(u)) error("Variable \"$" + u + "\" is not defined" + (o.name() == null ? "." : " by operation \"" + o.name() + "\"."), o.loc());
            for (VarDef v : o.variables()) if (!usedVars.contains(v.name())) error("Variable \"$" + v.name() + "\" is never used" + (o.name() == null ? "." : " in operation \"" + o.name() + "\"."), v.loc());
        }
        for (Fragment f : fragments.values()) if (!usedFragments.contains(f.name())) error("Fragment \"" + f.name() + "\" is never used.", f.loc());
    }

    private void cycle(String name, LinkedHashSet<String> path, Set<String> reported) {
        if (path.contains(name)) {
            if (reported.add(name)) error("Cannot spread fragment \"" + name + "\" within itself.", fragments.get(name).loc());
            return;
        }
        Fragment f = fragments.get(name);
        if (f == null || reported.contains(name) && path.isEmpty()) return;
        path.add(name);
        for (String s : spreads(f.selections(), new ArrayList<>())) cycle(s, path, reported);
        path.remove(name);
    }

    private static List<String> spreads(List<Selection> sels, List<String> out) {
        if (sels == null) return out;
        for (Selection s : sels) {
            if (s instanceof Spread sp) out.add(sp.name());
            else if (s instanceof Field f) spreads(f.selections(), out);
            else if (s instanceof Inline i) spreads(i.selections(), out);
        }
        return out;
    }

    private void directives(List<Directive> dirs, Map<String, VarDef> vars, Set<String> usedVars) {
        Set<String> seen = new HashSet<>();
        for (Directive d : dirs) {
            if (!d.name().equals("skip") && !d.name().equals("include")) {
                error("Unknown directive \"@" + d.name() + "\".", d.loc());
                continue;
            }
            if (!seen.add(d.name())) error("The directive \"@" + d.name() + "\" can only be used once at this location.", d.loc());
            arguments(d.args(), Map.of("if", new NonNull(new Named("Boolean"))), "Directive \"@" + d.name() + "\"", "@" + d.name(), d.loc(), vars, usedVars);
        }
    }

    private void arguments(List<Arg> args, Map<String, Type> defs, String owner, String ownerShort, Loc loc, Map<String, VarDef> vars, Set<String> usedVars) {
        Set<String> seen = new HashSet<>();
        for (Arg a : args) {
            collectVars(a.value(), usedVars);
            if (!seen.add(a.name())) error("There can be only one argument named \"" + a.name() + "\".", a.loc());
            Type t = defs.get(a.name());
            if (t == null) {
                error("Unknown argument \"" + a.name() + "\" on " + (ownerShort.startsWith("@") ? "directive \"" + ownerShort + "\"" : "field \"" + ownerShort + "\"") + ".", a.loc());
                continue;
            }
            String m = checkValue(a.value(), t, vars);
            if (m != null) error(m, a.value().loc());
        }
        for (var e : defs.entrySet()) {
            if (e.getValue() instanceof NonNull && args.stream().noneMatch(a -> a.name().equals(e.getKey()))) {
                error(owner + " argument \"" + e.getKey() + "\" of type \"" + e.getValue() + "\" is required, but it was not provided.", loc);
            }
        }
    }

    private static void collectVars(Value v, Set<String> used) {
        if (v instanceof Var x) used.add(x.name());
        else if (v instanceof ListV l) l.items().forEach(i -> collectVars(i, used));
        else if (v instanceof ObjectV o) o.fields().forEach(f -> collectVars(f.value(), used));
    }

    private void selections(List<Selection> sels, String parent, Map<String, VarDef> vars, Set<String> usedVars, Set<String> visited) {
        for (Selection s : sels) {
            if (s instanceof Field f) field(f, parent, vars, usedVars, visited);
            else if (s instanceof Inline i) {
                directives(i.directives(), vars, usedVars);
                String t = i.typeCondition() == null ? parent : i.typeCondition();
                if (!Schema.OBJECTS.containsKey(t)) {
                    error("Unknown type \"" + t + "\".", i.loc());
                    continue;
                }
                if (!t.equals(parent)) {
                    error("Fragment cannot be spread here as objects of type \"" + parent + "\" can never be of type \"" + t + "\".", i.loc());
                    continue;
                }
                selections(i.selections(), t, vars, usedVars, visited);
            } else if (s instanceof Spread sp) {
                directives(sp.directives(), vars, usedVars);
                Fragment f = fragments.get(sp.name());
                if (f == null) {
                    error("Unknown fragment \"" + sp.name() + "\".", sp.loc());
                    continue;
                }
                if (Schema.OBJECTS.containsKey(f.typeCondition()) && !f.typeCondition().equals(parent)) {
                    error("Fragment \"" + sp.name() + "\" cannot be spread here as objects of type \"" + parent
                            + "\" can never be of type \"" + f.typeCondition() + "\".", sp.loc());
                    continue;
                }
                if (visited.add(sp.name()) && Schema.OBJECTS.containsKey(f.typeCondition())) {
                    directives(f.directives(), vars, usedVars);
                    selections(f.selections(), f.typeCondition(), vars, usedVars, visited);
                }
            }
        }
    }

    private void field(Field f, String parent, Map<String, VarDef> vars, Set<String> usedVars, Set<String> visited) {
        directives(f.directives(), vars, usedVars);
        if (f.name().equals("__typename")) {
            if (!f.args().isEmpty()) error("Unknown argument \"" + f.args().get(0).name() + "\" on field \"" + parent + ".__typename\".", f.args().get(0).loc());
            if (f.selections() != null) error("Field \"__typename\" must not have a selection since type \"String!\" has no subfields.", f.loc());
            return;
        }
        Schema.FieldDef def = Schema.field(parent, f.name());
        if (def == null) {
            error("Cannot query field \"" + f.name() + "\" on type \"" + parent + "\".", f.loc());
            return;
        }
        arguments(f.args(), def.args(), "Field \"" + f.name() + "\"", parent + "." + f.name(), f.loc(), vars, usedVars);
        String t = Schema.namedType(def.type());
        boolean leaf = Schema.SCALARS.contains(t);
        if (leaf && f.selections() != null) {
            error("Field \"" + f.name() + "\" must not have a selection since type \"" + def.type() + "\" has no subfields.", f.loc());
        } else if (!leaf && f.selections() == null) {
            error("Field \"" + f.name() + "\" of type \"" + def.type() + "\" must have a selection of subfields. Did you mean \"" + f.name() + " { ... }\"?", f.loc());
        } else if (!leaf) {
            selections(f.selections(), t, vars, usedVars, visited);
        }
    }

    /** Why a literal (or a variable) does not fit type t, or null when it does. */
    static String checkValue(Value v, Type t, Map<String, VarDef> vars) {
        if (v instanceof Var x) {
            VarDef d = vars.get(x.name());
            if (d == null) return null; // reported as "not defined"
            if (!fits(d, t)) {
                return "Variable \"$" + x.name() + "\" of type \"" + d.type() + "\" used in position expecting type \"" + t + "\".";
            }
            return null;
        }
        if (t instanceof NonNull nn) {
            if (v instanceof NullV) return "Expected value of type \"" + t + "\", found null.";
            return checkValue(v, nn.of(), vars);
        }
        if (v instanceof NullV) return null;
        if (t instanceof ListOf l) {
            if (v instanceof ListV lv) {
                for (Value item : lv.items()) {
                    String m = checkValue(item, l.of(), vars);
                    if (m != null) return m;
                }
                return null;
            }
            return checkValue(v, l.of(), vars);
        }
        String n = ((Named) t).name();
        switch (n) {
            case "Int":
                if (v instanceof IntV i) {
                    BigInteger b = new BigInteger(i.text());
                    if (b.compareTo(I64_MIN) < 0 || b.compareTo(I64_MAX) > 0) return "Int cannot represent non 64-bit signed integer value: " + i.text();
                    return null;
                }
                return "Int cannot represent non-integer value: " + print(v);
            case "String":
                return v instanceof StringV ? null : "String cannot represent a non string value: " + print(v);
            case "Boolean":
                return v instanceof BoolV ? null : "Boolean cannot represent a non boolean value: " + print(v);
            default:
                Map<String, Type> fields = Schema.INPUTS.get(n);
                if (fields == null) return "Unknown type \"" + n + "\".";
                if (!(v instanceof ObjectV o)) return "Expected value of type \"" + t + "\", found " + print(v) + ".";
                Set<String> seen = new HashSet<>();
                for (ObjField f : o.fields()) {
                    if (!seen.add(f.name())) return "There can be only one input field named \"" + f.name() + "\".";
                    Type ft = fields.get(f.name());
                    if (ft == null) return "Field \"" + f.name() + "\" is not defined by type \"" + n + "\".";
                    String m = checkValue(f.value(), ft, vars);
                    if (m != null) return m;
                }
                for (var e : fields.entrySet()) {
                    if (e.getValue() instanceof NonNull && !seen.contains(e.getKey())) {
                        return "Field \"" + n + "." + e.getKey() + "\" of required type \"" + e.getValue() + "\" was not provided.";
                    }
                }
                return null;
        }
    }

    private static boolean fits(VarDef d, Type expected) {
        Type vt = d.type();
        boolean hasDefault = d.defaultValue() != null && !(d.defaultValue() instanceof NullV);
        if (expected instanceof NonNull en && !(vt instanceof NonNull)) {
            if (!hasDefault) return false;
            return sub(vt, en.of());
        }
        return sub(vt, expected);
    }

    private static boolean sub(Type vt, Type et) {
        if (et instanceof NonNull en) return vt instanceof NonNull vn && sub(vn.of(), en.of());
        if (vt instanceof NonNull vn) return sub(vn.of(), et);
        if (et instanceof ListOf el) return vt instanceof ListOf vl && sub(vl.of(), el.of());
        if (vt instanceof ListOf) return false;
        return ((Named) vt).name().equals(((Named) et).name());
    }

    static String print(Value v) {
        if (v instanceof IntV i) return i.text();
        if (v instanceof FloatV f) return f.text();
        if (v instanceof StringV s) return "\"" + s.value().replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
        if (v instanceof BoolV b) return Boolean.toString(b.value());
        if (v instanceof NullV) return "null";
        if (v instanceof EnumV e) return e.name();
        if (v instanceof Var x) return "$" + x.name();
        if (v instanceof ListV l) return "[" + String.join(", ", l.items().stream().map(Validator::print).toList()) + "]";
        ObjectV o = (ObjectV) v;
        return "{" + String.join(", ", o.fields().stream().map(f -> f.name() + ": " + print(f.value())).toList()) + "}";
    }

    static Map<String, Fragment> fragmentsOf(Document doc) {
        Map<String, Fragment> m = new HashMap<>();
        for (Definition d : doc.definitions()) if (d instanceof Fragment f) m.putIfAbsent(f.name(), f);
        return m;
    }
}
