package stacklab.http;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import javax.servlet.http.HttpServletRequest;

/**
 * JSON request bodies, read within the limit and parsed strictly (CONTRACT.md §4): the media
 * type must be application/json (checked before reading); a body over {@code max_body_bytes}
 * is a 413 (the rest is read and dropped, up to 16 MiB / 10 s, so a streaming proxy sees the
 * answer rather than a reset); the bytes must be UTF-8 holding one JSON object and nothing
 * after it; duplicate, unknown and missing fields and wrong types are named in {@code field}.
 */
public final class Body {
    private static final long DRAIN_BYTES = 16L << 20, DRAIN_MS = 10_000;
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final JsonFactory FACTORY = JSON.getFactory();

    /** A top-level object's fields in order, and the first duplicate name if any. */
    public static final class Obj {
        private final Map<String, JsonNode> fields;
        private final String duplicate;

        Obj(Map<String, JsonNode> fields, String duplicate) {
            this.fields = fields;
            this.duplicate = duplicate;
        }

        /** Refuses duplicates and (when strict) fields not in {@code known}. */
        public Obj check(List<String> known, boolean strict) {
            if (duplicate != null && (strict || known.contains(duplicate))) {
                throw ApiError.invalid(duplicate, "duplicate field `" + duplicate + "`; fix the body and send it again");
            }
            if (strict) {
                for (String k : fields.keySet()) {
                    if (!known.contains(k)) {
                        throw ApiError.invalid(k, "unknown field `" + k + "`, expected one of `" + String.join("`, `", known)
                                + "`; fix the body and send it again");
                    }
                }
            }
            return this;
        }

        private JsonNode value(String name, boolean required) {
            JsonNode v = fields.get(name);
            if (v == null || v.isNull()) {
                if (required) throw ApiError.invalid(name, "missing field `" + name + "`; fix the body and send it again");
                return null;
            }
            return v;
        }

        private static ApiError wrongType(String name, String want, JsonNode v) {
            return ApiError.badRequest("the body is not the JSON this takes: `" + name + "` must be " + want + ", not " + kind(v), name);
        }

        public String str(String name, boolean required) {
            JsonNode v = value(name, required);
            if (v == null) return null;
            if (!v.isTextual()) throw wrongType(name, "a string", v);
            return v.asText();
        }

        /** A non-negative whole number below 2^32, or null when absent. */
        public Long u32(String name) {
            JsonNode v = value(name, false);
            if (v == null) return null;
            if (!v.isIntegralNumber() || !v.canConvertToLong() || v.asLong() < 0 || v.asLong() >= 1L << 32) {
                throw wrongType(name, "a non-negative whole number below 2^32", v);
            }
            return v.asLong();
        }

        public JsonNode object(String name) {
            JsonNode v = value(name, false);
            if (v == null) return null;
            if (!v.isObject()) throw wrongType(name, "an object", v);
            return v;
        }
    }

    private static String kind(JsonNode v) {
        if (v.isBoolean()) return "a boolean";
        if (v.isIntegralNumber()) return "an integer";
        if (v.isNumber()) return "a floating point number";
        if (v.isTextual()) return "a string";
        if (v.isArray()) return "an array";
        return "an object";
    }

    static boolean isJson(HttpServletRequest req) {
        String ct = req.getHeader("Content-Type");
        if (ct == null) return false;
        return ct.split(";", 2)[0].strip().toLowerCase(Locale.ROOT).equals("application/json");
    }

    /** The raw body, at most {@code max} bytes, or the 413 (after draining what follows). */
    static byte[] readRaw(HttpServletRequest req, long max) throws IOException {
        long declared = req.getContentLengthLong();
        if (declared > DRAIN_BYTES) throw tooLarge(max);
        InputStream in = req.getInputStream();
        byte[] buf = in.readNBytes((int) Math.min(max + 1, Integer.MAX_VALUE - 8));
        if (buf.length <= max) return buf;
        long seen = buf.length;
        long deadline = System.nanoTime() + DRAIN_MS * 1_000_000;
        byte[] chunk = new byte[16384];
        for (int n; seen <= DRAIN_BYTES && System.nanoTime() < deadline && (n = in.read(chunk)) > 0; ) seen += n;
        throw tooLarge(max);
    }

    private static ApiError tooLarge(long max) {
        ApiError e = ApiError.tooLarge(max);
        return new ApiError(e.status(), e.code(), e.getMessage(), null, Map.of("Connection", "close"), null);
    }

    /** The body as one JSON object: 415, 413 or 400 as the contract says. */
    public static Obj read(HttpServletRequest req, long max) throws IOException {
        if (!isJson(req)) throw ApiError.unsupportedMediaType();
        return parse(readRaw(req, max));
    }

    static Obj parse(byte[] raw) {
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(raw)).toString();
        } catch (CharacterCodingException e) {
            throw ApiError.badRequest("the body is not valid UTF-8; send UTF-8 JSON");
        }
        try (JsonParser p = FACTORY.createParser(text)) {
            if (p.nextToken() != JsonToken.START_OBJECT) throw ApiError.badRequest("the body is not the JSON this takes: expected a JSON object");
            Map<String, JsonNode> fields = new LinkedHashMap<>();
            String duplicate = null;
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.getCurrentName();
                p.nextToken();
                JsonNode v = JSON.readTree(p);
                if (fields.containsKey(name) && duplicate == null) duplicate = name;
                else fields.put(name, v);
            }
            if (p.nextToken() != null) throw ApiError.badRequest("the body is not the JSON this takes: trailing data after the object");
            for (var e : fields.entrySet()) {
                if (loneSurrogate(e.getKey()) || loneSurrogate(e.getValue())) {
                    throw ApiError.badRequest("the body is not the JSON this takes: a string holds a lone surrogate escape");
                }
            }
            return new Obj(fields, duplicate);
        } catch (IOException e) {
            String m = e.getMessage() == null ? "" : e.getMessage().split("\n", 2)[0];
            throw ApiError.badRequest("the body is not the JSON this takes: " + m);
        }
    }

    private static boolean loneSurrogate(JsonNode v) {
        if (v.isTextual()) return loneSurrogate(v.asText());
        if (v.isContainerNode()) {
            for (Iterator<Map.Entry<String, JsonNode>> it = v.fields(); it.hasNext(); ) {
                var e = it.next();
                if (loneSurrogate(e.getKey()) || loneSurrogate(e.getValue())) return true;
            }
            if (v.isArray()) for (JsonNode x : v) if (loneSurrogate(x)) return true;
        }
        return false;
    }

    private static boolean loneSurrogate(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c)) {
                if (i + 1 >= s.length() || !Character.isLowSurrogate(s.charAt(i + 1))) return true;
                i++;
            } else if (Character.isLowSurrogate(c)) return true;
        }
        return false;
    }
}
