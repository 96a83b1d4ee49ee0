package stacklab.graphql;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import stacklab.graphql.Ast.ListOf;
import stacklab.graphql.Ast.Named;
import stacklab.graphql.Ast.NonNull;
import stacklab.graphql.Ast.Type;

/**
 * The contract's schema (CONTRACT.md §7), field for field, as data the validator and the
 * executor read. {@code Int} is 64-bit here: {@code createdAt} is Unix milliseconds.
 */
public final class Schema {
    private Schema() {}

    public record FieldDef(Type type, Map<String, Type> args) {}

    public static final Set<String> SCALARS = Set.of("Int", "String", "Boolean");

    private static Type nn(Type t) { return new NonNull(t); }

    private static Type named(String n) { return new Named(n); }

    private static Map<String, Type> args(Object... kv) {
        Map<String, Type> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put((String) kv[i], (Type) kv[i + 1]);
        return m;
    }

    private static final Type INT = named("Int"), STRING = named("String"), BOOLEAN = named("Boolean");

    /** Object types: their fields. */
    public static final Map<String, Map<String, FieldDef>> OBJECTS = Map.of(
            "Query", ordered(
                    "users", new FieldDef(nn(named("UserPage")), args("q", STRING, "limit", INT, "offset", INT)),
                    "user", new FieldDef(nn(named("User")), args("id", nn(INT)))),
            "Mutation", ordered(
                    "createUser", new FieldDef(nn(named("User")), args("input", nn(named("CreateUserInput")))),
                    "updateUser", new FieldDef(nn(named("User")), args("id", nn(INT), "input", nn(named("UpdateUserInput")))),
                    "deleteUser", new FieldDef(nn(BOOLEAN), args("id", nn(INT))),
                    "verifyPassword", new FieldDef(nn(BOOLEAN), args("id", nn(INT), "password", nn(STRING)))),
            "User", ordered(
                    "id", new FieldDef(nn(INT), Map.of()),
                    "username", new FieldDef(nn(STRING), Map.of()),
                    "email", new FieldDef(nn(STRING), Map.of()),
                    "fullName", new FieldDef(nn(STRING), Map.of()),
                    "storedPassword", new FieldDef(nn(STRING), Map.of()),
                    "storedEmail", new FieldDef(nn(STRING), Map.of()),
                    "createdAt", new FieldDef(nn(INT), Map.of()),
                    "updatedAt", new FieldDef(nn(INT), Map.of())),
            "UserPage", ordered(
                    "items", new FieldDef(nn(new ListOf(nn(named("User")))), Map.of()),
                    "total", new FieldDef(nn(INT), Map.of()),
                    "limit", new FieldDef(nn(INT), Map.of()),
                    "offset", new FieldDef(nn(INT), Map.of())));

    /** Input object types: their fields. */
    public static final Map<String, Map<String, Type>> INPUTS = Map.of(
            "CreateUserInput", args("username", nn(STRING), "email", nn(STRING), "password", nn(STRING), "fullName", STRING),
            "UpdateUserInput", args("username", STRING, "email", STRING, "password", STRING, "fullName", STRING));

    private static Map<String, FieldDef> ordered(Object... kv) {
        Map<String, FieldDef> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put((String) kv[i], (FieldDef) kv[i + 1]);
        return m;
    }

    public static String namedType(Type t) {
        while (!(t instanceof Named n)) t = t instanceof NonNull x ? x.of() : ((ListOf) t).of();
        return n.name();
    }

    public static FieldDef field(String parent, String name) {
        Map<String, FieldDef> fields = parent == null ? null : OBJECTS.get(parent);
        return fields == null ? null : fields.get(name);
    }

    public static boolean isInputType(Type t) {
        String n = namedType(t);
        return SCALARS.contains(n) || INPUTS.containsKey(n);
    }
}
