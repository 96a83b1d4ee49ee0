package stacklab.sessions;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.List;

/**
 * A session's stack as control describes it (CONTRACT.md §3): the wire JSON, secrets
 * included, with typed accessors for what this runtime reads. Fields with a default may be
 * missing; unknown fields are ignored.
 */
public record Descriptor(JsonNode json) {
    private static final List<String> DATABASES = List.of("sqlite", "postgres", "mysql", "mongodb");
    private static final List<String> CACHES = List.of("memory", "redis", "memcached", "none");

    /** The checks a body must pass to be a descriptor; the message says what is missing. */
    public static Descriptor of(JsonNode d) {
        if (d == null || !d.isObject()) throw new IllegalArgumentException("not an object");
        if (!d.path("session").isTextual()) throw new IllegalArgumentException("session is not a string");
        JsonNode db = d.path("database"), cache = d.path("cache");
        if (!DATABASES.contains(db.path("engine").asText("")) || !db.path("url").isTextual()) {
            throw new IllegalArgumentException("database.engine or database.url");
        }
        if (!CACHES.contains(cache.path("engine").asText(""))) throw new IllegalArgumentException("cache.engine");
        return new Descriptor(d);
    }

    private String text(JsonNode n, String dflt) { return n.isTextual() ? n.asText() : dflt; }

    public String session() { return json.path("session").asText(); }
    public String dbEngine() { return json.path("database").path("engine").asText(); }
    public String dbUrl() { return json.path("database").path("url").asText(); }
    public String cacheEngine() { return json.path("cache").path("engine").asText(); }
    public String cacheUrl() { return text(json.path("cache").path("url"), ""); }
    public String keyPrefix() { return text(json.path("cache").path("key_prefix"), ""); }
    public String cachePolicy() { return text(json.path("cache").path("policy"), ""); }
    public long maxBytes() { return json.path("cache").path("max_bytes").asLong(0); }
    public long ttlMs() { return json.path("cache").path("ttl_ms").asLong(0); }
    public boolean shared() { return json.path("cache").path("shared").asBoolean(false); }
    public boolean writeThrough() { return "write-through".equals(text(json.path("write_policy"), "cache-aside")); }
    public String passwordStorage() { return text(json.path("password_storage"), "argon2id"); }
    public boolean encrypted() { return "aes-256-gcm".equals(text(json.path("encryption"), "none")); }
    public String encryptionKey() { return text(json.path("encryption_key"), ""); }
    public String pepper() { return text(json.path("pepper"), ""); }

    /** The same stack, ignoring cache.policy (which this API itself may have changed). */
    public boolean sameStack(Descriptor other) {
        return strip(json).equals(strip(other.json));
    }

    private static JsonNode strip(JsonNode d) {
        JsonNode c = d.deepCopy();
        if (c.path("cache") instanceof ObjectNode o) o.remove("policy");
        return c;
    }
}
