package stacklab.cache;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.LongSupplier;

/**
 * The in-process cache (CONTRACT.md §13): a map bounded in bytes (key + value UTF-8 bytes) with
 * an eviction policy switchable while it runs — LRU, LFU, FIFO, TTL. One per session per
 * instance, guarded by its own monitor (a session's requests run on several Jetty threads).
 *
 * <p>The map's iteration order is recency (a read or write moves the entry to the end), which
 * gives LRU's victim and the listing's order directly; the other policies scan for their victim
 * when a write does not fit, which at the sizes a session's cache holds costs less than keeping
 * a heap per policy in step. A logical clock ticks once per read or write, so ranks never tie.
 * Expired entries are purged before every operation; time comes from an injected clock.
 */
public final class MemoryCache implements Cache {
    public static final long DEFAULT_MAX_BYTES = 1024 * 1024;
    public static final List<String> POLICIES = List.of("lru", "lfu", "fifo", "ttl");
    private static final Map<String, String> MEANING = Map.of(
            "lru", "LRU: when full, the entry read or written longest ago is evicted",
            "lfu", "LFU: when full, the entry read or written the fewest times is evicted (the least recently used among equals)",
            "fifo", "FIFO: when full, the entry written first is evicted; reads do not count",
            "ttl", "TTL: when full, the entry closest to expiry is evicted; entries without a TTL go last");

    private static final class Entry {
        final String value;
        final long size, written, expiresAt; // expiresAt: Long.MAX_VALUE = never
        long touched, uses;

        Entry(String value, long size, long written, long expiresAt, long uses) {
            this.value = value;
            this.size = size;
            this.written = written;
            this.touched = written;
            this.expiresAt = expiresAt;
            this.uses = uses;
        }
    }

    private final LinkedHashMap<String, Entry> entries = new LinkedHashMap<>();
    private final long max;
    private final LongSupplier clockMs;
    private String current;
    private long bytes, tick, hits, misses, evictions, nextExpiry = Long.MAX_VALUE;

    public MemoryCache(String policy, long maxBytes, LongSupplier clockMs) throws CacheException.UnknownPolicy {
        this.current = policy.isBlank() ? "lru" : parse(policy);
        this.max = maxBytes > 0 ? maxBytes : DEFAULT_MAX_BYTES;
        this.clockMs = clockMs;
    }

    public static String parse(String name) throws CacheException.UnknownPolicy {
        String p = name.strip().toLowerCase(java.util.Locale.ROOT);
        if (!POLICIES.contains(p)) throw new CacheException.UnknownPolicy("the in-process cache", name, POLICIES);
        return p;
    }

    @Override public String engine() { return "memory"; }

    private void purge(long now) {
        if (now < nextExpiry) return;
        long next = Long.MAX_VALUE;
        for (Iterator<Entry> it = entries.values().iterator(); it.hasNext(); ) {
            Entry e = it.next();
            if (e.expiresAt <= now) {
                it.remove();
                bytes -= e.size;
            } else {
                next = Math.min(next, e.expiresAt);
            }
        }
        nextExpiry = next;
    }

    private Entry take(String key) {
        Entry e = entries.remove(key);
        if (e != null) bytes -= e.size;
        return e;
    }

    private void put(String key, Entry e) {
        entries.put(key, e);
        bytes += e.size;
        nextExpiry = Math.min(nextExpiry, e.expiresAt);
    }

    /** Negative when a goes before b under the policy. */
    private int before(Entry a, Entry b) {
        return switch (current) {
            case "lru" -> Long.compare(a.touched, b.touched);
            case "lfu" -> a.uses != b.uses ? Long.compare(a.uses, b.uses) : Long.compare(a.touched, b.touched);
            case "fifo" -> Long.compare(a.written, b.written);
            default -> {
                boolean ax = a.expiresAt != Long.MAX_VALUE, bx = b.expiresAt != Long.MAX_VALUE;
                if (ax != bx) yield ax ? -1 : 1;
                if (ax) yield a.expiresAt != b.expiresAt ? Long.compare(a.expiresAt, b.expiresAt) : Long.compare(a.written, b.written);
                yield Long.compare(a.touched, b.touched);
            }
        };
    }

    private boolean evictOne() {
        String victim = null;
        Entry rank = null;
        for (var kv : entries.entrySet()) {
            if (rank == null || before(kv.getValue(), rank) < 0) {
                victim = kv.getKey();
                rank = kv.getValue();
            }
            if (current.equals("lru")) break; // the first is the least recently used
        }
        if (victim == null) return false;
        take(victim);
        return true;
    }

    @Override
    public synchronized String get(String key) {
        purge(clockMs.getAsLong());
        Entry e = take(key);
        if (e == null) {
            misses++;
            return null;
        }
        hits++;
        e.touched = ++tick;
        e.uses++;
        put(key, e);
        return e.value;
    }

    @Override
    public synchronized void set(String key, String value, long ttlMs) {
        long now = clockMs.getAsLong();
        purge(now);
        Entry previous = take(key);
        long size = key.getBytes(StandardCharsets.UTF_8).length + value.getBytes(StandardCharsets.UTF_8).length;
        if (size > max) return; // larger than the whole cache; the old value went too
        while (bytes + size > max && evictOne()) evictions++;
        long t = ++tick;
        put(key, new Entry(value, size, t, ttlMs > 0 ? now + ttlMs : Long.MAX_VALUE, previous == null ? 1 : previous.uses + 1));
    }

    @Override
    public synchronized void delete(String key) {
        purge(clockMs.getAsLong());
        take(key);
    }

    @Override
    public synchronized List<Item> items(int limit) {
        long now = clockMs.getAsLong();
        purge(now);
        List<Map.Entry<String, Entry>> all = new ArrayList<>(entries.entrySet());
        List<Item> out = new ArrayList<>();
        for (int i = all.size() - 1; i >= 0 && out.size() < Math.min(limit, MAX_LISTED_ITEMS); i--) {
            Entry e = all.get(i).getValue();
            Long ttl = e.expiresAt == Long.MAX_VALUE ? null : Math.max(0, e.expiresAt - now);
            out.add(new Item(all.get(i).getKey(), ttl, e.size, Cache.preview(e.value)));
        }
        return out;
    }

    @Override
    public synchronized Stats stats() {
        purge(clockMs.getAsLong());
        return new Stats(hits, misses, evictions, bytes, max);
    }

    @Override
    public synchronized Policy policy() { return new Policy(current, POLICIES, true, MEANING.get(current)); }

    @Override
    public synchronized void setPolicy(String name) throws CacheException { current = parse(name); }

    @Override
    public synchronized void flush() {
        entries.clear();
        bytes = 0;
        nextExpiry = Long.MAX_VALUE;
    }

    @Override
    public void close() { flush(); }
}
