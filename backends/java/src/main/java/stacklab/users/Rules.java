package stacklab.users;

import java.nio.charset.StandardCharsets;
import stacklab.config.Limits;
import stacklab.http.ApiError;

/** The input rules of CONTRACT.md §6; each failure is 400 invalid naming the field. */
public final class Rules {
    private Rules() {}

    public static int chars(String s) { return s.codePointCount(0, s.length()); }

    /** Java's String.strip trims Unicode white space, as Rust's str::trim does. */
    public static String trim(String s) { return s.strip(); }

    public static String username(String v) {
        v = trim(v);
        int n = chars(v);
        if (n < Limits.MIN_USERNAME || n > Limits.MAX_USERNAME) {
            throw ApiError.invalid("username", "a username is " + Limits.MIN_USERNAME + " to " + Limits.MAX_USERNAME + " characters");
        }
        if (!v.matches("[A-Za-z0-9_.-]+")) throw ApiError.invalid("username", "use letters, digits, `_`, `.` or `-` in a username");
        return v;
    }

    public static String email(String v) {
        v = trim(v);
        if (v.isEmpty() || chars(v) > Limits.MAX_EMAIL) {
            throw ApiError.invalid("email", "an email address is 3 to " + Limits.MAX_EMAIL + " characters");
        }
        ApiError bad = ApiError.invalid("email", "give an email address like name@example.com");
        int at = v.lastIndexOf('@');
        if (at < 0) throw bad;
        String local = v.substring(0, at), domain = v.substring(at + 1);
        boolean domainOk = domain.contains(".") && !domain.startsWith(".") && !domain.endsWith(".")
                && domain.codePoints().allMatch(c -> Character.isLetterOrDigit(c) || Character.isAlphabetic(c)
                        || Character.getType(c) == Character.LETTER_NUMBER || Character.getType(c) == Character.OTHER_NUMBER
                        || c == '.' || c == '-');
        if (local.isEmpty() || local.contains("@") || !domainOk
                || v.codePoints().anyMatch(c -> Character.isWhitespace(c) || Character.isSpaceChar(c) || Character.isISOControl(c))) {
            throw bad;
        }
        return v;
    }

    public static void password(String v) {
        if (chars(v) < Limits.MIN_PASSWORD || v.getBytes(StandardCharsets.UTF_8).length > Limits.MAX_PASSWORD_BYTES) {
            throw ApiError.invalid("password", "a password is " + Limits.MIN_PASSWORD + " characters to " + Limits.MAX_PASSWORD_BYTES + " bytes");
        }
        // PostgreSQL text cannot hold NUL and bcrypt stops reading at one: refused everywhere.
        if (v.indexOf('\0') >= 0) throw ApiError.invalid("password", "a password cannot contain the NUL character");
    }

    public static String fullName(String v) {
        v = trim(v);
        if (chars(v) > Limits.MAX_FULL_NAME || v.codePoints().anyMatch(Character::isISOControl)) {
            throw ApiError.invalid("full_name", "a full name is at most " + Limits.MAX_FULL_NAME + " characters, without control characters");
        }
        return v;
    }

    /** Unicode lower-casing, locale-independent (Rust's str::to_lowercase). */
    public static String lower(String s) { return s.toLowerCase(java.util.Locale.ROOT); }
}
