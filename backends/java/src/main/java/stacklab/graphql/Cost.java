package stacklab.graphql;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import stacklab.graphql.Ast.*;

/**
 * What a document would cost, counted before anything runs (CONTRACT.md §7, §9a) — in one pass
 * over the document whatever it spreads: each fragment is counted once and its result
 * remembered, and a spread inside a cycle counts 0 (validation then refuses the cycle). So a
 * fragment bomb that stands for 2^24 selections costs 48 fragment visits to refuse. Counts
 * saturate at {@link #COUNTLESS} rather than overflow.
 */
public final class Cost {
    public static final long COUNTLESS = Long.MAX_VALUE / 16;

    private Cost() {}

    private static long add(long a, long b) { return Math.min(COUNTLESS, a + b); }

    private static Map<String, Fragment> fragments(Document doc) {
        Map<String, Fragment> m = new HashMap<>();
        for (Definition d : doc.definitions()) if (d instanceof Fragment f) m.putIfAbsent(f.name(), f);
        return m;
    }

    private static List<Selection> selectionsOf(Definition d) {
        return d instanceof Operation o ? o.selections() : ((Fragment) d).selections();
    }

    /** Field selections written out, every operation and fragment; a spread counts 0. */
    public static long fields(Document doc) {
        long n = 0;
        for (Definition d : doc.definitions()) n = add(n, written(selectionsOf(d)));
        return n;
    }

    private static long written(List<Selection> sels) {
        long n = 0;
        if (sels == null) return 0;
        for (Selection s : sels) {
            if (s instanceof Field f) n = add(n, 1 + written(f.selections()));
            else if (s instanceof Inline i) n = add(n, written(i.selections()));
        }
        return n;
    }

    /** Field selections of every operation with its fragment spreads spread out. */
    public static long spreadFields(Document doc) {
        Map<String, Fragment> frags = fragments(doc);
        Map<String, Long> known = new HashMap<>();
        Set<String> open = new HashSet<>();
        long n = 0;
        for (Definition d : doc.definitions()) if (d instanceof Operation o) n = add(n, spread(o.selections(), frags, known, open));
        return n;
    }

    private static long spread(List<Selection> sels, Map<String, Fragment> frags, Map<String, Long> known, Set<String> open) {
        long n = 0;
        if (sels == null) return 0;
        for (Selection s : sels) {
            if (s instanceof Field f) n = add(n, 1 + spread(f.selections(), frags, known, open));
            else if (s instanceof Inline i) n = add(n, spread(i.selections(), frags, known, open));
            else if (s instanceof Spread sp) {
                Long k = known.get(sp.name());
                if (k == null) {
                    Fragment f = frags.get(sp.name());
                    if (f == null || open.contains(sp.name())) k = 0L;
                    else {
                        open.add(sp.name());
                        k = spread(f.selections(), frags, known, open);
                        open.remove(sp.name());
                        known.put(sp.name(), k);
                    }
                }
                n = add(n, k);
            }
        }
        return n;
    }

    /** Fields that hash a password: verifyPassword, createUser, updateUser setting a password. */
    public static long hashes(Document doc, JsonNode variables) {
        long n = 0;
        for (Definition d : doc.definitions()) n = add(n, hashes(selectionsOf(d), variables));
        return n;
    }

    private static long hashes(List<Selection> sels, JsonNode vars) {
        long n = 0;
        if (sels == null) return 0;
        for (Selection s : sels) {
            if (s instanceof Field f) {
                long own = f.name().equals("verifyPassword") || f.name().equals("createUser") ? 1
                        : f.name().equals("updateUser") && setsPassword(f, vars) ? 1 : 0;
                n = add(n, own + hashes(f.selections(), vars));
            } else if (s instanceof Inline i) n = add(n, hashes(i.selections(), vars));
        }
        return n;
    }

    private static boolean given(JsonNode vars, String name) { return vars != null && vars.has(name); }

    private static boolean setsPassword(Field f, JsonNode vars) {
        Arg input = f.args().stream().filter(a -> a.name().equals("input")).findFirst().orElse(null);
        if (input == null) return false;
        if (input.value() instanceof ObjectV o) {
            ObjField p = o.fields().stream().filter(x -> x.name().equals("password")).findFirst().orElse(null);
            if (p == null || p.value() instanceof NullV) return false;
            if (p.value() instanceof Var v) return !given(vars, v.name()) || !vars.get(v.name()).isNull();
            return true;
        }
        if (input.value() instanceof Var v) {
            if (!given(vars, v.name())) return true;
            JsonNode g = vars.get(v.name());
            return g.isObject() && g.has("password") && !g.get("password").isNull();
        }
        return false;
    }

    /** Complexity and depth over every operation, fragments inlined, __typename not visited. */
    public record Shape(long complexity, long depth) {}

    public static Shape shape(Document doc) {
        Map<String, Fragment> frags = fragments(doc);
        Map<String, Shape> known = new HashMap<>();
        Set<String> open = new HashSet<>();
        long complexity = 0, depth = 0;
        for (Definition d : doc.definitions()) {
            if (!(d instanceof Operation o)) continue;
            String root = o.kind().equals("query") ? "Query" : o.kind().equals("mutation") ? "Mutation" : null;
            Shape s = walk(o.selections(), root, frags, known, open);
            complexity = add(complexity, s.complexity);
            depth = Math.max(depth, s.depth);
        }
        return new Shape(complexity, depth);
    }

    private static Shape walk(List<Selection> sels, String parent, Map<String, Fragment> frags, Map<String, Shape> known, Set<String> open) {
        long total = 0, depth = 0;
        if (sels == null) return new Shape(0, 0);
        for (Selection s : sels) {
            if (s instanceof Field f) {
                if (f.name().equals("__typename")) continue;
                Schema.FieldDef def = Schema.field(parent, f.name());
                Shape c = walk(f.selections(), def == null ? null : Schema.namedType(def.type()), frags, known, open);
                total = add(total, "Query".equals(parent) && f.name().equals("users") ? Math.min(COUNTLESS, 10 * c.complexity) : 1 + c.complexity);
                depth = Math.max(depth, 1 + c.depth);
            } else if (s instanceof Inline i) {
                Shape c = walk(i.selections(), i.typeCondition() != null ? i.typeCondition() : parent, frags, known, open);
                total = add(total, c.complexity);
                depth = Math.max(depth, c.depth);
            } else if (s instanceof Spread sp) {
                Shape c = known.get(sp.name());
                if (c == null) {
                    Fragment f = frags.get(sp.name());
                    if (f == null || open.contains(sp.name())) c = new Shape(0, 0);
                    else {
                        open.add(sp.name());
                        c = walk(f.selections(), f.typeCondition(), frags, known, open);
                        open.remove(sp.name());
                        known.put(sp.name(), c);
                    }
                }
                total = add(total, c.complexity);
                depth = Math.max(depth, c.depth);
            }
        }
        return new Shape(total, depth);
    }
}
