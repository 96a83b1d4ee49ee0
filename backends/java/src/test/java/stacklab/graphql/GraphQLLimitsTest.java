package stacklab.graphql;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import stacklab.config.Limits;

/**
 * The hand-written parser, limits and validator with the queries the conformance suite sends
 * and with hostile ones: alias and field bombs, fragment bombs and cycles, depth, bad syntax.
 */
class GraphQLLimitsTest {
    private static final Limits LIMITS = Limits.defaults();

    private static GraphQL.Answer check(String q) throws Exception {
        return GraphQL.check(LIMITS, null, Parser.parse(q), null);
    }

    private static String refusal(String q) throws Exception {
        GraphQL.Answer a = check(q);
        assertNotNull(a, "refused: " + q);
        assertTrue(a.refused());
        return a.errors().get(0).message();
    }

    @Test
    void theSuitesQueriesPass() throws Exception {
        for (String q : new String[] {
            "query($q: String) { users(q: $q, limit: 10) { total items { username storedPassword } } }",
            "mutation { createUser(input: {username: \"gql\", email: \"gql@example.com\", password: \"password123\"}) { id email } }",
            "{ user(id: 999) { id } }",
            "{ users { total } }",
            "query Q($id: Int!) { user(id: $id) { ...F __typename } } fragment F on User { id username createdAt }",
            "mutation($id: Int!, $in: UpdateUserInput!) { updateUser(id: $id, input: $in) { id } deleteUser(id: 3) verifyPassword(id: 1, password: \"x\") }",
            "{ u: user(id: 1) @include(if: true) { id } ... on Query { users(q: \"\"\"block\"\"\") { total } } }",
        }) {
            assertNull(check(q), q);
        }
    }

    @Test
    void complexityAndDepthCountAsTheContractSays() throws Exception {
        assertEquals(10, Cost.shape(Parser.parse("{ users { total } }")).complexity());
        assertEquals(30, Cost.shape(Parser.parse("{ users { items { id username } } }")).complexity());
        assertEquals(2, Cost.shape(Parser.parse("{ user(id: 1) { id } }")).complexity());
        assertEquals(3, Cost.shape(Parser.parse("{ users { items { id } } }")).depth());
        assertEquals(0, Cost.shape(Parser.parse("{ __typename }")).complexity());
    }

    @Test
    void bombsAreRefusedQuickly() throws Exception {
        String aliases = IntStream.range(0, 150).mapToObj(i -> "a" + i + ": users { total } ").collect(Collectors.joining());
        assertEquals("Query is too complex.", refusal("{ " + aliases + "}"));
        String typenames = IntStream.range(0, 600).mapToObj(i -> "t" + i + ": __typename ").collect(Collectors.joining());
        assertTrue(refusal("{ " + typenames + "}").contains("selects 600 fields"));
        assertEquals("Query is nested too deep.", refusal("{ __schema { types { fields { type { ofType { ofType { ofType { name } } } } } } } }"));
        StringBuilder frags = new StringBuilder("{ ...A0 }\n");
        for (int i = 0; i < 24; i++) {
            frags.append("fragment A").append(i).append(" on Query { ...A").append(i + 1).append(" ...B").append(i + 1).append(" }\n");
            frags.append("fragment B").append(i).append(" on Query { ...A").append(i + 1).append(" ...B").append(i + 1).append(" }\n");
        }
        frags.append("fragment A24 on Query { users { total } }\nfragment B24 on Query { users { items { id } } }\n");
        long t = System.nanoTime();
        assertTrue(refusal(frags.toString()).contains("once its fragments are spread"));
        assertTrue(System.nanoTime() - t < 1_000_000_000L, "a fragment bomb is refused in well under a second");
        assertTrue(refusal("{ ...A } fragment A on Query { users { total } ...B } fragment B on Query { ...A }").contains("within itself"));
        String hashes = IntStream.range(0, 11).mapToObj(i -> "v" + i + ": verifyPassword(id: 1, password: \"x\") ").collect(Collectors.joining());
        assertTrue(refusal("mutation { " + hashes + "}").contains("11 password hashes"));
    }

    @Test
    void hashesCountUpdateUserOnlyWhenItSetsAPassword() throws Exception {
        ObjectMapper m = new ObjectMapper();
        String q = "mutation($in: UpdateUserInput!) { updateUser(id: 1, input: $in) { id } }";
        assertEquals(1, Cost.hashes(Parser.parse(q), m.readTree("{\"in\": {\"password\": \"p\"}}")));
        assertEquals(0, Cost.hashes(Parser.parse(q), m.readTree("{\"in\": {\"username\": \"p\"}}")));
        assertEquals(1, Cost.hashes(Parser.parse(q), null), "a variable not given counts");
        assertEquals(0, Cost.hashes(Parser.parse("mutation { updateUser(id: 1, input: {username: \"x\"}) { id } }"), null));
    }

    @Test
    void syntaxErrorsSayWhere() {
        GraphQLError.SyntaxError e = assertThrows(GraphQLError.SyntaxError.class, () -> Parser.parse("{ users { total "));
        assertTrue(e.error.message().startsWith("Syntax Error: Expected Name, found <EOF>"), e.error.message());
        assertEquals(1, e.error.locations().get(0).line());
        assertThrows(GraphQLError.SyntaxError.class, () -> Parser.parse(""));
        assertThrows(GraphQLError.SyntaxError.class, () -> Parser.parse("{ " + "a { ".repeat(5000) + "}".repeat(5000) + " }"));
        assertThrows(GraphQLError.SyntaxError.class, () -> Parser.parse("type Query { a: Int }"));
    }

    @Test
    void validationNamesWhatIsWrong() throws Exception {
        assertTrue(refusal("{ nope }").contains("Cannot query field \"nope\" on type \"Query\""));
        assertTrue(refusal("{ user { id } }").contains("argument \"id\" of type \"Int!\" is required"));
        assertTrue(refusal("{ user(id: \"1\") { id } }").contains("Int cannot represent"));
        assertTrue(refusal("{ user(id: 1) }").contains("must have a selection of subfields"));
        assertTrue(refusal("{ users { total { x } } }").contains("must not have a selection"));
        assertTrue(refusal("query($x: Int) { users { total } }").contains("never used"));
        assertTrue(refusal("{ user(id: $x) { id } }").contains("not defined"));
        assertTrue(refusal("{ users { total } } fragment F on User { id }").contains("never used"));
        assertTrue(refusal("mutation { createUser(input: {username: \"a\"}) { id } }").contains("was not provided"));
        assertTrue(refusal("{ user(id: 99999999999999999999) { id } }").contains("64-bit"));
    }
}
