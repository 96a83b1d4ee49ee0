package stacklab.graphql;

import java.util.ArrayList;
import java.util.List;
import stacklab.graphql.Ast.*;

/**
 * A recursive-descent parser for executable GraphQL documents (the October 2021 spec's
 * grammar: operations, fragments, variables, directives, every value literal, block strings).
 * Type-system definitions are a syntax error here, as they are for any server. Nesting is
 * bounded ({@link #MAX_NESTING}) so that a document of 64 KiB of braces is refused rather than
 * overflowing the thread's stack.
 *
 * <p>Written by hand: Debian packages no GraphQL library for Java (no graphql-java).
 */
public final class Parser {
    /** Selection sets, lists and objects nested deeper than this are refused while parsing. */
    public static final int MAX_NESTING = 64;

    private enum Kind { PUNCT, NAME, INT, FLOAT, STRING, EOF }

    private record Token(Kind kind, String text, Loc loc) {}

    private final String src;
    private int pos, line = 1, lineStart;
    private Token tok;
    private int nesting;

    private Parser(String src) throws GraphQLError.SyntaxError {
        this.src = src;
        this.tok = lex();
    }

    public static Document parse(String source) throws GraphQLError.SyntaxError {
        Parser p = new Parser(source);
        List<Definition> defs = new ArrayList<>();
        do {
            defs.add(p.definition());
        } while (p.tok.kind != Kind.EOF);
        return new Document(defs);
    }

    // --- lexer -------------------------------------------------------------------------------

    private Loc here() { return new Loc(line, pos - lineStart + 1); }

    private GraphQLError.SyntaxError error(String message, Loc loc) { return new GraphQLError.SyntaxError(message, loc); }

    private Token lex() throws GraphQLError.SyntaxError {
        // white space, line terminators, commas, comments, the BOM
        while (pos < src.length()) {
            char c = src.charAt(pos);
            if (c == ' ' || c == '\t' || c == ',' || c == '\uFEFF') pos++;
            else if (c == '\n') newline(1);
            else if (c == '\r') newline(pos + 1 < src.length() && src.charAt(pos + 1) == '\n' ? 2 : 1);
            else if (c == '#') {
                while (pos < src.length() && src.charAt(pos) != '\n' && src.charAt(pos) != '\r') pos++;
            } else break;
        }
        Loc loc = here();
        if (pos >= src.length()) return new Token(Kind.EOF, "<EOF>", loc);
        char c = src.charAt(pos);
        if ("!$&()@[]{}|:=".indexOf(c) >= 0) {
            pos++;
            return new Token(Kind.PUNCT, String.valueOf(c), loc);
        }
        if (c == '.') {
            if (src.startsWith("...", pos)) {
                pos += 3;
                return new Token(Kind.PUNCT, "...", loc);
            }
            throw error("Unexpected \".\".", loc);
        }
        if (c == '_' || Character.isLetter(c) && c < 128) {
            int start = pos;
            while (pos < src.length() && isNameChar(src.charAt(pos))) pos++;
            return new Token(Kind.NAME, src.substring(start, pos), loc);
        }
        if (c == '-' || (c >= '0' && c <= '9')) return number(loc);
        if (c == '"') {
            if (src.startsWith("\"\"\"", pos)) return blockString(loc);
            return string(loc);
        }
        throw error("Unexpected character " + describe(c) + ".", loc);
    }

    private static String describe(char c) {
        return c < 0x20 || c > 0x7e ? String.format("\"\\u%04X\"", (int) c) : "\"" + c + "\"";
    }

    private void newline(int width) {
        pos += width;
        line++;
        lineStart = pos;
    }

    private static boolean isNameChar(char c) {
        return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    }

    private Token number(Loc loc) throws GraphQLError.SyntaxError {
        int start = pos;
        if (src.charAt(pos) == '-') pos++;
        if (pos < src.length() && src.charAt(pos) == '0') {
            pos++;
            if (pos < src.length() && Character.isDigit(src.charAt(pos))) throw error("Invalid number, unexpected digit after 0.", here());
        } else digits();
        boolean isFloat = false;
        if (pos < src.length() && src.charAt(pos) == '.') {
            isFloat = true;
            pos++;
            digits();
        }
        if (pos < src.length() && (src.charAt(pos) == 'e' || src.charAt(pos) == 'E')) {
            isFloat = true;
            pos++;
            if (pos < src.length() && (src.charAt(pos) == '+' || src.charAt(pos) == '-')) pos++;
            digits();
        }
        if (pos < src.length() && (src.charAt(pos) == '.' || src.charAt(pos) == '_' || Character.isLetter(src.charAt(pos)))) {
            throw error("Invalid number, expected digit but got: " + describe(src.charAt(pos)) + ".", here());
        }
        return new Token(isFloat ? Kind.FLOAT : Kind.INT, src.substring(start, pos), loc);
    }

    private void digits() throws GraphQLError.SyntaxError {
        int start = pos;
        while (pos < src.length() && src.charAt(pos) >= '0' && src.charAt(pos) <= '9') pos++;
        if (pos == start) throw error("Invalid number, expected digit but got: " + (pos < src.length() ? describe(src.charAt(pos)) : "<EOF>") + ".", here());
    }

    private Token string(Loc loc) throws GraphQLError.SyntaxError {
        pos++;
        StringBuilder sb = new StringBuilder();
        while (true) {
            if (pos >= src.length()) throw error("Unterminated string.", here());
            char c = src.charAt(pos);
            if (c == '"') {
                pos++;
                return new Token(Kind.STRING, sb.toString(), loc);
            }
            if (c == '\n' || c == '\r') throw error("Unterminated string.", here());
            if (c == '\\') {
                if (pos + 1 >= src.length()) throw error("Unterminated string.", here());
                char e = src.charAt(pos + 1);
                switch (e) {
                    case '"' -> sb.append('"');
                    case '\\' -> sb.append('\\');
                    case '/' -> sb.append('/');
                    case 'b' -> sb.append('\b');
                    case 'f' -> sb.append('\f');
                    case 'n' -> sb.append('\n');
                    case 'r' -> sb.append('\r');
                    case 't' -> sb.append('\t');
                    case 'u' -> {
                        if (pos + 6 > src.length() || !src.substring(pos + 2, pos + 6).matches("[0-9a-fA-F]{4}")) {
                            throw error("Invalid Unicode escape sequence.", here());
                        }
                        sb.append((char) Integer.parseInt(src.substring(pos + 2, pos + 6), 16));
                        pos += 4;
                    }
                    default -> throw error("Invalid character escape sequence: \"\\" + e + "\".", here());
                }
                pos += 2;
                continue;
            }
            if (c < 0x20 && c != '\t') throw error("Invalid character within String: " + describe(c) + ".", here());
            sb.append(c);
            pos++;
        }
    }

    private Token blockString(Loc loc) throws GraphQLError.SyntaxError {
        pos += 3;
        StringBuilder raw = new StringBuilder();
        while (true) {
            if (pos >= src.length()) throw error("Unterminated string.", here());
            if (src.startsWith("\"\"\"", pos)) {
                pos += 3;
                return new Token(Kind.STRING, blockValue(raw.toString()), loc);
            }
            if (src.startsWith("\\\"\"\"", pos)) {
                raw.append("\"\"\"");
                pos += 4;
                continue;
            }
            char c = src.charAt(pos);
            if (c == '\n') {
                raw.append(c);
                newline(1);
                continue;
            }
            if (c == '\r') {
                raw.append('\n');
                newline(pos + 1 < src.length() && src.charAt(pos + 1) == '\n' ? 2 : 1);
                continue;
            }
            raw.append(c);
            pos++;
        }
    }

    /** The spec's BlockStringValue: common indentation and blank first/last lines removed. */
    static String blockValue(String raw) {
        String[] lines = raw.split("\n", -1);
        int common = Integer.MAX_VALUE;
        for (int i = 1; i < lines.length; i++) {
            String l = lines[i];
            int indent = 0;
            while (indent < l.length() && (l.charAt(indent) == ' ' || l.charAt(indent) == '\t')) indent++;
            if (indent < l.length() && indent < common) common = indent;
        }
        List<String> out = new ArrayList<>(List.of(lines));
        if (common != Integer.MAX_VALUE) {
            for (int i = 1; i < out.size(); i++) out.set(i, out.get(i).length() >= common ? out.get(i).substring(common) : "");
        }
        while (!out.isEmpty() && out.get(0).isBlank()) out.remove(0);
        while (!out.isEmpty() && out.get(out.size() - 1).isBlank()) out.remove(out.size() - 1);
        return String.join("\n", out);
    }

    // --- parser ------------------------------------------------------------------------------

    private String found() {
        return switch (tok.kind) {
            case EOF -> "<EOF>";
            case STRING -> "String \"" + tok.text + "\"";
            case NAME -> "Name \"" + tok.text + "\"";
            case INT -> "Int \"" + tok.text + "\"";
            case FLOAT -> "Float \"" + tok.text + "\"";
            default -> "\"" + tok.text + "\"";
        };
    }

    private boolean peek(String punct) { return tok.kind == Kind.PUNCT && tok.text.equals(punct); }

    private boolean peekName(String name) { return tok.kind == Kind.NAME && tok.text.equals(name); }

    private Token advance() throws GraphQLError.SyntaxError {
        Token t = tok;
        tok = lex();
        return t;
    }

    private Token expect(String punct) throws GraphQLError.SyntaxError {
        if (!peek(punct)) throw error("Expected \"" + punct + "\", found " + found() + ".", tok.loc);
        return advance();
    }

    private String name() throws GraphQLError.SyntaxError {
        if (tok.kind != Kind.NAME) throw error("Expected Name, found " + found() + ".", tok.loc);
        return advance().text;
    }

    private void enter() throws GraphQLError.SyntaxError {
        if (++nesting > MAX_NESTING) throw error("the document nests deeper than " + MAX_NESTING + " levels.", tok.loc);
    }

    private Definition definition() throws GraphQLError.SyntaxError {
        Loc loc = tok.loc;
        if (peek("{")) return new Operation("query", null, List.of(), List.of(), selectionSet(), loc);
        if (tok.kind == Kind.NAME) {
            switch (tok.text) {
                case "query", "mutation", "subscription" -> {
                    String kind = advance().text;
                    String name = tok.kind == Kind.NAME ? name() : null;
                    List<VarDef> vars = peek("(") ? variableDefinitions() : List.of();
                    List<Directive> dirs = directives(false);
                    return new Operation(kind, name, vars, dirs, selectionSet(), loc);
                }
                case "fragment" -> {
                    advance();
                    if (peekName("on")) throw error("Unexpected Name \"on\".", tok.loc);
                    String name = name();
                    if (!peekName("on")) throw error("Expected \"on\", found " + found() + ".", tok.loc);
                    advance();
                    String type = name();
                    List<Directive> dirs = directives(false);
                    return new Fragment(name, type, dirs, selectionSet(), loc);
                }
                default -> { }
            }
        }
        throw error("Unexpected " + found() + ".", tok.loc);
    }

    private List<VarDef> variableDefinitions() throws GraphQLError.SyntaxError {
        expect("(");
        List<VarDef> out = new ArrayList<>();
        do {
            Loc loc = tok.loc;
            expect("$");
            String name = name();
            expect(":");
            Type type = type();
            Value dflt = null;
            if (peek("=")) {
                advance();
                dflt = value(true);
            }
            directives(true);
            out.add(new VarDef(name, type, dflt, loc));
        } while (!peek(")"));
        advance();
        return out;
    }

    private Type type() throws GraphQLError.SyntaxError {
        Type t;
        if (peek("[")) {
            enter();
            advance();
            t = new ListOf(type());
            expect("]");
            nesting--;
        } else {
            t = new Named(name());
        }
        if (peek("!")) {
            advance();
            t = new NonNull(t);
        }
        return t;
    }

    private List<Directive> directives(boolean isConst) throws GraphQLError.SyntaxError {
        List<Directive> out = new ArrayList<>();
        while (peek("@")) {
            Loc loc = advance().loc;
            String name = name();
            out.add(new Directive(name, peek("(") ? arguments(isConst) : List.of(), loc));
        }
        return out;
    }

    private List<Arg> arguments(boolean isConst) throws GraphQLError.SyntaxError {
        expect("(");
        List<Arg> out = new ArrayList<>();
        do {
            Loc loc = tok.loc;
            String name = name();
            expect(":");
            out.add(new Arg(name, value(isConst), loc));
        } while (!peek(")"));
        advance();
        return out;
    }

    private List<Selection> selectionSet() throws GraphQLError.SyntaxError {
        enter();
        expect("{");
        List<Selection> out = new ArrayList<>();
        do {
            out.add(selection());
        } while (!peek("}"));
        advance();
        nesting--;
        return out;
    }

    private Selection selection() throws GraphQLError.SyntaxError {
        Loc loc = tok.loc;
        if (peek("...")) {
            advance();
            if (tok.kind == Kind.NAME && !tok.text.equals("on")) {
                String name = name();
                return new Spread(name, directives(false), loc);
            }
            String type = null;
            if (peekName("on")) {
                advance();
                type = name();
            }
            List<Directive> dirs = directives(false);
            return new Inline(type, dirs, selectionSet(), loc);
        }
        String first = name();
        String alias = null, name = first;
        if (peek(":")) {
            advance();
            alias = first;
            name = name();
        }
        List<Arg> args = peek("(") ? arguments(false) : List.of();
        List<Directive> dirs = directives(false);
        List<Selection> sels = peek("{") ? selectionSet() : null;
        return new Field(alias, name, args, dirs, sels, loc);
    }

    private Value value(boolean isConst) throws GraphQLError.SyntaxError {
        Token t = tok;
        Loc loc = t.loc;
        switch (t.kind) {
            case PUNCT -> {
                switch (t.text) {
                    case "$" -> {
                        if (isConst) throw error("Unexpected variable \"$" + (lexAhead()) + "\" in constant value.", loc);
                        advance();
                        return new Var(name(), loc);
                    }
                    case "[" -> {
                        enter();
                        advance();
                        List<Value> items = new ArrayList<>();
                        while (!peek("]")) items.add(value(isConst));
                        advance();
                        nesting--;
                        return new ListV(items, loc);
                    }
                    case "{" -> {
                        enter();
                        advance();
                        List<ObjField> fields = new ArrayList<>();
                        while (!peek("}")) {
                            Loc floc = tok.loc;
                            String n = name();
                            expect(":");
                            fields.add(new ObjField(n, value(isConst), floc));
                        }
                        advance();
                        nesting--;
                        return new ObjectV(fields, loc);
                    }
                    default -> throw error("Unexpected " + found() + ".", loc);
                }
            }
            case INT -> {
                advance();
                return new IntV(t.text, loc);
            }
            case FLOAT -> {
                advance();
                return new FloatV(t.text, loc);
            }
            case STRING -> {
                advance();
                return new StringV(t.text, loc);
            }
            case NAME -> {
                advance();
                return switch (t.text) {
                    case "true" -> new BoolV(true, loc);
                    case "false" -> new BoolV(false, loc);
                    case "null" -> new NullV(loc);
                    default -> new EnumV(t.text, loc);
                };
            }
            default -> throw error("Unexpected " + found() + ".", loc);
        }
    }

    private String lexAhead() {
        int p = pos;
        while (p < src.length() && (src.charAt(p) == ' ')) p++;
        int s = p;
        while (p < src.length() && isNameChar(src.charAt(p))) p++;
        return src.substring(s, p);
    }
}
