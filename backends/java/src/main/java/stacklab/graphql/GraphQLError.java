package stacklab.graphql;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One entry of a response's {@code errors}: a message, where in the document it is, and for a
 * field that ran, its path and the API error's code and field as {@code extensions}.
 */
public record GraphQLError(String message, List<Ast.Loc> locations, List<Object> path, Map<String, Object> extensions) {
    public GraphQLError(String message, Ast.Loc loc) { this(message, loc == null ? List.of() : List.of(loc), null, null); }

    public Map<String, Object> json() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("message", message);
        if (locations != null && !locations.isEmpty()) {
            m.put("locations", locations.stream().map(l -> Map.of("line", l.line(), "column", l.column())).toList());
        }
        if (path != null) m.put("path", path);
        if (extensions != null) m.put("extensions", extensions);
        return m;
    }

    /** A document that cannot be parsed: the first error there is. */
    public static final class SyntaxError extends Exception {
        public final GraphQLError error;

        public SyntaxError(String message, Ast.Loc loc) {
            super(message, null, false, false);
            this.error = new GraphQLError("Syntax Error: " + message, loc);
        }
    }
}
