package stacklab.graphql;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import stacklab.config.Limits;
import stacklab.security.Guards;
import stacklab.users.Session;
import stacklab.users.Trace;

/**
 * One GraphQL request (CONTRACT.md §7): parse, then the limits in the contract's order — fields
 * written out, fields once fragments are spread, password hashes, complexity, depth — then
 * validation, then execution. Anything refused before it ran is {@link Answer#refused}, which
 * the HTTP layer answers 400 with GraphQL's fields and the API error.
 */
public final class GraphQL {
    private GraphQL() {}

    public record Answer(boolean refused, List<GraphQLError> errors, Object data) {
        public Map<String, Object> json() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("data", data);
            if (!errors.isEmpty()) m.put("errors", errors.stream().map(GraphQLError::json).toList());
            return m;
        }
    }

    private static Answer refuse(String message) { return refuse(List.of(new GraphQLError(message, (Ast.Loc) null))); }

    private static Answer refuse(List<GraphQLError> errors) { return new Answer(true, errors, null); }

    /** Checks a document against the limits and the schema: null when it may run. */
    public static Answer check(Limits limits, Guards guards, Ast.Document doc, JsonNode variables) {
        long fields = Cost.fields(doc);
        if (fields > limits.graphqlMaxFields()) {
            return refuse("the query selects " + fields + " fields (aliases included); at most " + limits.graphqlMaxFields() + " are allowed");
        }
        long spread = Cost.spreadFields(doc);
        if (spread > limits.graphqlMaxFields()) {
            return refuse("the query selects " + (spread >= Cost.COUNTLESS ? "countless" : Long.toString(spread))
                    + " fields once its fragments are spread (aliases included); at most " + limits.graphqlMaxFields() + " are allowed");
        }
        long hashes = Cost.hashes(doc, variables);
        if (hashes > limits.graphqlMaxHashes()) {
            if (guards != null) guards.graphqlRefused();
            return refuse("the query asks for " + hashes + " password hashes (verifyPassword, createUser, updateUser with a password; "
                    + "aliases included); at most " + limits.graphqlMaxHashes() + " are allowed in one request, so send the rest in further requests");
        }
        Cost.Shape shape = Cost.shape(doc);
        if (shape.complexity() > limits.graphqlMaxComplexity()) return refuse("Query is too complex.");
        if (shape.depth() > limits.graphqlMaxDepth()) return refuse("Query is nested too deep.");
        List<GraphQLError> errors = Validator.validate(doc);
        return errors.isEmpty() ? null : refuse(errors);
    }

    public static Answer run(Limits limits, Guards guards, String query, String operationName, JsonNode variables, Session session, Trace trace) {
        Ast.Document doc;
        try {
            doc = Parser.parse(query);
        } catch (GraphQLError.SyntaxError e) {
            return refuse(List.of(e.error));
        }
        Answer refused = check(limits, guards, doc, variables);
        if (refused != null) return refused;
        try {
            Ast.Operation op = Executor.select(doc, operationName);
            Executor.Result r = Executor.run(doc, op, variables, session, trace);
            return new Answer(false, r.errors(), r.data());
        } catch (Executor.RequestError e) {
            return refuse(e.errors);
        }
    }
}
