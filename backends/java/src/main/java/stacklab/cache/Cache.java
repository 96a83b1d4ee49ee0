package stacklab.cache;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A session's cache (CONTRACT.md §13) behind one interface: in-process, Redis, Memcached or
 * none. The service speaks logical keys ({@code user:42}); Redis and Memcached put the
 * session's key prefix in front. Hits and misses are counted per session by the adapter;
 * evictions and memory come from the engine.
 */
public interface Cache extends AutoCloseable {
    int MAX_LISTED_ITEMS = 20;
    int PREVIEW_BYTES = 120;

    String engine();

    /** The value, or null on a miss (counted). */
    String get(String key) throws CacheException;

    void set(String key, String value, long ttlMs) throws CacheException;

    void delete(String key) throws CacheException;

    List<Item> items(int limit) throws CacheException;

    Stats stats() throws CacheException;

    Policy policy() throws CacheException;

    /** Applies a canonical (trimmed, lower-cased) policy name, or refuses. */
    void setPolicy(String name) throws CacheException;

    /** Removes this session's entries only. */
    void flush() throws CacheException;

    @Override
    void close();

    record Item(String key, Long ttlMs, long bytes, String valuePreview) {
        public Map<String, Object> json() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("key", key);
            m.put("ttl_ms", ttlMs);
            m.put("bytes", bytes);
            m.put("value_preview", valuePreview);
            return m;
        }
    }

    record Stats(long hits, long misses, long evictions, long bytes, long maxBytes) {
        public Map<String, Object> json() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("hits", hits);
            m.put("misses", misses);
            m.put("evictions", evictions);
            m.put("bytes", bytes);
            m.put("max_bytes", maxBytes);
            return m;
        }
    }

    record Policy(String policy, List<String> policies, boolean changeable, String note) {}

    /** The first 120 bytes of a value as lossy UTF-8. */
    static String preview(byte[] value) {
        return new String(Arrays.copyOf(value, Math.min(value.length, PREVIEW_BYTES)), StandardCharsets.UTF_8);
    }

    static String preview(String value) { return preview(value.getBytes(StandardCharsets.UTF_8)); }
}
