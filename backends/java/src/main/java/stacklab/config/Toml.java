package stacklab.config;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Just enough TOML to read one table of a stacklab config file: {@code key = value} lines with
 * integers, booleans, basic and literal strings, and comments. Values of other tables are
 * skipped unread. Written by
 * hand: Debian packages no TOML library for Java.
 */
public final class Toml {
    private Toml() {}

    public static final class TomlException extends Exception {
        public TomlException(String message) { super(message); }
    }

    /** The keys of table {@code name} (empty when it is absent). */
    public static Map<String, Object> table(String text, String name) throws TomlException {
        Map<String, Object> out = new LinkedHashMap<>();
        String current = "";
        int lineNo = 0;
        for (String raw : text.split("\n", -1)) {
            lineNo++;
            String line = stripComment(raw).strip();
            if (line.isEmpty()) continue;
            if (line.startsWith("[")) {
                if (!line.endsWith("]")) throw new TomlException("line " + lineNo + ": a table header must end with ]");
                current = line.replaceAll("^\\[+|\\]+$", "").strip();
                continue;
            }
            // Other tables are not read at all (their values may span lines: arrays, strings).
            if (!current.equals(name)) continue;
            int eq = line.indexOf('=');
            if (eq <= 0) throw new TomlException("line " + lineNo + ": expected `key = value`");
            String key = line.substring(0, eq).strip();
            if (key.startsWith("\"") && key.endsWith("\"") && key.length() >= 2) key = key.substring(1, key.length() - 1);
            String value = line.substring(eq + 1).strip();
            if (out.containsKey(key)) throw new TomlException("line " + lineNo + ": duplicate key `" + key + "`");
            out.put(key, value(value, lineNo));
        }
        return out;
    }

    private static String stripComment(String line) {
        boolean inBasic = false, inLiteral = false;
        for (int i = 0; i < line.length(); i++) {
            char c = line.charAt(i);
            if (inBasic) {
                if (c == '\\') i++;
                else if (c == '"') inBasic = false;
            } else if (inLiteral) {
                if (c == '\'') inLiteral = false;
            } else if (c == '"') inBasic = true;
            else if (c == '\'') inLiteral = true;
            else if (c == '#') return line.substring(0, i);
        }
        return line;
    }

    private static Object value(String v, int lineNo) throws TomlException {
        if (v.equals("true")) return Boolean.TRUE;
        if (v.equals("false")) return Boolean.FALSE;
        if (v.startsWith("'")) {
            if (v.length() < 2 || !v.endsWith("'")) throw new TomlException("line " + lineNo + ": unterminated string");
            return v.substring(1, v.length() - 1);
        }
        if (v.startsWith("\"")) {
            if (v.length() < 2 || !v.endsWith("\"")) throw new TomlException("line " + lineNo + ": unterminated string");
            StringBuilder sb = new StringBuilder();
            for (int i = 1; i < v.length() - 1; i++) {
                char c = v.charAt(i);
                if (c != '\\') { sb.append(c); continue; }
                char e = v.charAt(++i);
                switch (e) {
                    case 'n' -> sb.append('\n');
                    case 't' -> sb.append('\t');
                    case 'r' -> sb.append('\r');
                    case '"' -> sb.append('"');
                    case '\\' -> sb.append('\\');
                    case 'u' -> { sb.append((char) Integer.parseInt(v.substring(i + 1, i + 5), 16)); i += 4; }
                    default -> throw new TomlException("line " + lineNo + ": unknown escape \\" + e);
                }
            }
            return sb.toString();
        }
        String digits = v.replace("_", "");
        if (digits.matches("[+-]?[0-9]+")) {
            try {
                return Long.parseLong(digits);
            } catch (NumberFormatException e) {
                throw new TomlException("line " + lineNo + ": integer out of range");
            }
        }
        if (digits.matches("[+-]?[0-9.eE+-]+")) return Double.parseDouble(digits);
        // Arrays and inline tables: kept as text, which no backend key takes.
        return new Object[] {v};
    }
}
