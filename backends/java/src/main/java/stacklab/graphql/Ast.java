package stacklab.graphql;

import java.util.List;

/** The syntax tree of a GraphQL document, as {@link Parser} builds it (executable documents only). */
public final class Ast {
    private Ast() {}

    public record Loc(int line, int column) {}

    public record Document(List<Definition> definitions) {}

    public sealed interface Definition permits Operation, Fragment {}

    public record Operation(String kind, String name, List<VarDef> variables, List<Directive> directives, List<Selection> selections, Loc loc)
            implements Definition {}

    public record Fragment(String name, String typeCondition, List<Directive> directives, List<Selection> selections, Loc loc)
            implements Definition {}

    public record VarDef(String name, Type type, Value defaultValue, Loc loc) {}

    public sealed interface Type permits Named, ListOf, NonNull {}

    public record Named(String name) implements Type {
        @Override public String toString() { return name; }
    }

    public record ListOf(Type of) implements Type {
        @Override public String toString() { return "[" + of + "]"; }
    }

    public record NonNull(Type of) implements Type {
        @Override public String toString() { return of + "!"; }
    }

    public sealed interface Selection permits Field, Spread, Inline {
        Loc loc();
    }

    /** {@code selections} is null for a leaf written without braces. */
    public record Field(String alias, String name, List<Arg> args, List<Directive> directives, List<Selection> selections, Loc loc)
            implements Selection {
        public String key() { return alias != null ? alias : name; }
    }

    public record Spread(String name, List<Directive> directives, Loc loc) implements Selection {}

    public record Inline(String typeCondition, List<Directive> directives, List<Selection> selections, Loc loc) implements Selection {}

    public record Arg(String name, Value value, Loc loc) {}

    public record Directive(String name, List<Arg> args, Loc loc) {}

    public sealed interface Value permits Var, IntV, FloatV, StringV, BoolV, NullV, EnumV, ListV, ObjectV {
        Loc loc();
    }

    public record Var(String name, Loc loc) implements Value {}
    public record IntV(String text, Loc loc) implements Value {}
    public record FloatV(String text, Loc loc) implements Value {}
    public record StringV(String value, Loc loc) implements Value {}
    public record BoolV(boolean value, Loc loc) implements Value {}
    public record NullV(Loc loc) implements Value {}
    public record EnumV(String name, Loc loc) implements Value {}
    public record ListV(List<Value> items, Loc loc) implements Value {}
    public record ObjectV(List<ObjField> fields, Loc loc) implements Value {}
    public record ObjField(String name, Value value, Loc loc) {}
}
