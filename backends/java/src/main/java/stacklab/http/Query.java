package stacklab.http;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

/**
 * The query string as the contract reads it (CONTRACT.md §4): pairs split on {@code &}, the
 * first pair with a name wins, {@code +} is a space, {@code %XX} a byte, the result lossy
 * UTF-8; and decimal integers as Rust's {@code str::parse::<i64>} reads them.
 */
public final class Query {
    private Query() {}

    public static Map<String, String> parse(String raw) {
        Map<String, String> out = new HashMap<>();
        if (raw == null || raw.isEmpty()) return out;
        for (String pair : raw.split("&")) {
            if (pair.isEmpty()) continue;
            int eq = pair.indexOf('=');
            String name = decode(eq < 0 ? pair : pair.substring(0, eq));
            out.putIfAbsent(name, decode(eq < 0 ? "" : pair.substring(eq + 1)));
        }
        return out;
    }

    public static String decode(String s) {
        ByteArrayOutputStream b = new ByteArrayOutputStream(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '+') b.write(' ');
            else if (c == '%' && i + 2 < s.length() && hex(s.charAt(i + 1)) >= 0 && hex(s.charAt(i + 2)) >= 0) {
                b.write(hex(s.charAt(i + 1)) * 16 + hex(s.charAt(i + 2)));
                i += 2;
            } else {
                int cp = s.codePointAt(i);
                if (Character.charCount(cp) == 2) i++;
                b.writeBytes(new String(Character.toChars(cp)).getBytes(StandardCharsets.UTF_8));
            }
        }
        return b.toString(StandardCharsets.UTF_8);
    }

    private static int hex(char c) { return Character.digit(c, 16); }

    /** A decimal i64 (optional sign, ASCII digits only), else 400 invalid on {@code field}. */
    public static long whole(String text, String field, String message) {
        if (!text.matches("[+-]?[0-9]+")) throw ApiError.invalid(field, message);
        try {
            return Long.parseLong(text.startsWith("+") ? text.substring(1) : text);
        } catch (NumberFormatException e) {
            throw ApiError.invalid(field, message);
        }
    }
}
