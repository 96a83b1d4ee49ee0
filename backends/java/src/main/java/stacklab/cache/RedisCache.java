package stacklab.cache;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicLong;
import stacklab.redis.RespClient;
import stacklab.redis.RespClient.ErrorReply;
import stacklab.redis.RespClient.RedisException;

/**
 * The Redis cache (CONTRACT.md §13) over the hand-written {@link RespClient}. Keys are
 * {@code key_prefix + key}, so sessions sharing a server stay apart; listing and flushing are
 * {@code SCAN MATCH prefix*}, never KEYS or FLUSHDB. Policies are the server's own
 * maxmemory-policy: a session with a server of its own may change it; on a shared server a
 * change would apply to every session, so it is refused.
 */
public final class RedisCache implements Cache {
    public static final List<String> POLICIES = List.of("noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
            "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl");
    public static final int TIMEOUT_MS = 3000;
    private static final int SCAN_COUNT = 500, ITEMS_SCAN_BUDGET = 5000, UNLINK_BATCH = 500;
    static final String SHARED_REFUSAL = "this Redis server is shared by other sessions: its maxmemory-policy applies to every key "
            + "on it, so changing it would change eviction for everyone. Start a session with its own Redis to try the policies";
    static final String CONFIG_DENIED = "the Redis user may not run CONFIG (an ACL or a managed service), so the maxmemory-policy "
            + "in force cannot be read or changed from here";
    private static final Map<String, String> MEANING = Map.of(
            "noeviction", "noeviction: when full, writes fail and nothing is evicted",
            "allkeys-lru", "allkeys-lru: when full, evicts the (approximately) least recently used key",
            "allkeys-lfu", "allkeys-lfu: when full, evicts the (approximately) least frequently used key",
            "allkeys-random", "allkeys-random: when full, evicts a random key",
            "volatile-lru", "volatile-lru: when full, evicts the least recently used key among those with a TTL",
            "volatile-lfu", "volatile-lfu: when full, evicts the least frequently used key among those with a TTL",
            "volatile-random", "volatile-random: when full, evicts a random key among those with a TTL",
            "volatile-ttl", "volatile-ttl: when full, evicts the key with a TTL closest to expiry");

    private final RespClient client;
    private final String prefix, pattern, wanted;
    private final boolean shared;
    private final AtomicLong hits = new AtomicLong(), misses = new AtomicLong();

    private RedisCache(RespClient client, String prefix, boolean shared, String wanted) {
        this.client = client;
        this.prefix = prefix;
        this.pattern = escapeGlob(prefix) + "*";
        this.shared = shared;
        this.wanted = wanted;
    }

    public static String parse(String name) throws CacheException.UnknownPolicy {
        String p = name.strip().toLowerCase(Locale.ROOT);
        if (!POLICIES.contains(p)) throw new CacheException.UnknownPolicy("Redis", name, POLICIES);
        return p;
    }

    static String escapeGlob(String prefix) { return prefix.replaceAll("([*?\\[\\]\\\\])", "\\\\$1"); }

    private static boolean denied(ErrorReply e) {
        String m = e.message().toUpperCase(Locale.ROOT);
        return m.startsWith("NOPERM") || m.contains("UNKNOWN COMMAND") || m.contains("UNKNOWN SUBCOMMAND");
    }

    public static RedisCache open(String url, String prefix, boolean shared, String policy, long maxBytes) throws CacheException {
        String wanted = policy.isBlank() ? "" : parse(policy);
        RespClient c;
        try {
            c = RespClient.forUrl(url, TIMEOUT_MS);
        } catch (RedisException e) {
            throw new CacheException(e.getMessage());
        }
        RedisCache cache = new RedisCache(c, prefix, shared, wanted);
        try {
            Object pong = c.command("PING");
            if (pong instanceof ErrorReply e) throw new CacheException("Redis at " + c.endpoint() + ": PING failed: " + e.message());
            if (!shared) {
                if (maxBytes > 0) cache.configure("maxmemory", Long.toString(maxBytes));
                if (!wanted.isEmpty()) cache.configure("maxmemory-policy", wanted);
            }
        } catch (RedisException e) {
            c.close();
            throw new CacheException("Redis at " + c.endpoint() + ": connect failed: " + e.getMessage());
        } catch (CacheException e) {
            c.close();
            throw e;
        }
        return cache;
    }

    private void configure(String name, String value) throws CacheException {
        Object r = cmd("CONFIG", "SET", name, value);
        if (r instanceof ErrorReply e) {
            if (!denied(e)) throw new CacheException("Redis at " + client.endpoint() + ": CONFIG SET " + name + " failed: " + e.message());
            System.err.println("cannot set Redis " + name + " at " + client.endpoint() + ": " + e.message());
        }
    }

    private Object cmd(String... args) throws CacheException {
        try {
            return client.command(args);
        } catch (RedisException e) {
            throw new CacheException("Redis at " + client.endpoint() + ": " + args[0] + " failed: " + e.getMessage());
        }
    }

    private Object ok(String... args) throws CacheException {
        Object r = cmd(args);
        if (r instanceof ErrorReply e) throw new CacheException("Redis at " + client.endpoint() + ": " + args[0] + " failed: " + e.message());
        return r;
    }

    private List<Object> pipeline(List<List<String>> commands) throws CacheException {
        try {
            return client.pipeline(commands);
        } catch (RedisException e) {
            throw new CacheException("Redis at " + client.endpoint() + ": pipeline failed: " + e.getMessage());
        }
    }

    @Override public String engine() { return "redis"; }

    @Override
    public String get(String key) throws CacheException {
        String v = RespClient.text(ok("GET", prefix + key));
        (v == null ? misses : hits).incrementAndGet();
        return v;
    }

    @Override
    public void set(String key, String value, long ttlMs) throws CacheException {
        if (ttlMs > 0) ok("SET", prefix + key, value, "PX", Long.toString(ttlMs));
        else ok("SET", prefix + key, value);
    }

    @Override
    public void delete(String key) throws CacheException { ok("DEL", prefix + key); }

    @SuppressWarnings("unchecked")
    private List<String> scanPage(String cursor, String[] next) throws CacheException {
        List<Object> r = (List<Object>) ok("SCAN", cursor, "MATCH", pattern, "COUNT", Integer.toString(SCAN_COUNT));
        next[0] = RespClient.text(r.get(0));
        List<String> keys = new ArrayList<>();
        for (Object k : (List<Object>) r.get(1)) keys.add(RespClient.text(k));
        return keys;
    }

    private record Ranked(String key, long idle, long pttl) {}

    @Override
    public List<Item> items(int limit) throws CacheException {
        limit = Math.min(limit, MAX_LISTED_ITEMS);
        if (limit <= 0) return List.of();
        TreeSet<String> keys = new TreeSet<>();
        String cursor = "0";
        int examined = 0;
        String[] next = new String[1];
        do {
            keys.addAll(scanPage(cursor, next));
            cursor = next[0];
            examined += SCAN_COUNT;
        } while (!"0".equals(cursor) && examined < ITEMS_SCAN_BUDGET);
        List<String> sorted = new ArrayList<>(keys);
        List<List<String>> q = new ArrayList<>();
        for (String k : sorted) {
            q.add(List.of("OBJECT", "IDLETIME", k));
            q.add(List.of("PTTL", k));
        }
        List<Object> r = pipeline(q);
        List<Ranked> ranked = new ArrayList<>();
        for (int i = 0; i < sorted.size(); i++) {
            Object idle = r.get(2 * i), pttl = r.get(2 * i + 1);
            if (!(pttl instanceof Long p) || p == -2) continue; // gone since the scan
            ranked.add(new Ranked(sorted.get(i), idle instanceof Long l ? l : Long.MAX_VALUE, p));
        }
        ranked.sort(Comparator.comparingLong(Ranked::idle)
                .thenComparing(Comparator.comparingLong((Ranked x) -> x.pttl() < 0 ? Long.MAX_VALUE : x.pttl()).reversed())
                .thenComparing(Ranked::key));
        List<Ranked> top = ranked.subList(0, Math.min(limit, ranked.size()));
        q = new ArrayList<>();
        for (Ranked x : top) {
            q.add(List.of("MEMORY", "USAGE", x.key()));
            q.add(List.of("STRLEN", x.key()));
            q.add(List.of("GETRANGE", x.key(), "0", Integer.toString(PREVIEW_BYTES - 1)));
        }
        List<Object> more = pipeline(q);
        List<Item> out = new ArrayList<>();
        for (int i = 0; i < top.size(); i++) {
            Ranked x = top.get(i);
            Object usage = more.get(3 * i), strlen = more.get(3 * i + 1), value = more.get(3 * i + 2);
            long size = usage instanceof Long u ? u : strlen instanceof Long s ? s : 0;
            String logical = x.key().startsWith(prefix) ? x.key().substring(prefix.length()) : x.key();
            out.add(new Item(logical, x.pttl() >= 0 ? x.pttl() : null, size,
                    value instanceof byte[] b ? Cache.preview(b) : ""));
        }
        return out;
    }

    private static long infoField(String text, String name) {
        for (String line : text.split("\r?\n")) {
            if (line.startsWith(name + ":")) {
                try {
                    return Long.parseLong(line.substring(name.length() + 1).strip());
                } catch (NumberFormatException e) {
                    return 0;
                }
            }
        }
        return 0;
    }

    /** CONFIG GET's value, or null when CONFIG is denied. */
    @SuppressWarnings("unchecked")
    private String configGet(String name) throws CacheException {
        Object r = cmd("CONFIG", "GET", name);
        if (r instanceof ErrorReply e) {
            if (denied(e)) return null;
            throw new CacheException("Redis at " + client.endpoint() + ": CONFIG GET failed: " + e.message());
        }
        List<Object> l = (List<Object>) r;
        return l.size() >= 2 ? RespClient.text(l.get(1)) : "";
    }

    @Override
    public Stats stats() throws CacheException {
        String infoStats = RespClient.text(ok("INFO", "stats"));
        String infoMemory = RespClient.text(ok("INFO", "memory"));
        String maxmemory = configGet("maxmemory");
        long maxBytes = 0;
        try {
            maxBytes = maxmemory == null ? 0 : Long.parseLong(maxmemory);
        } catch (NumberFormatException ignored) {
            // not a number: shown as 0
        }
        return new Stats(hits.get(), misses.get(), infoField(infoStats, "evicted_keys"), infoField(infoMemory, "used_memory"), maxBytes);
    }

    @Override
    public Policy policy() throws CacheException {
        String p = configGet("maxmemory-policy");
        if (p == null) return new Policy(wanted.isEmpty() ? "unknown" : wanted, POLICIES, false, shared ? SHARED_REFUSAL : CONFIG_DENIED);
        return new Policy(p, POLICIES, !shared, shared ? SHARED_REFUSAL : MEANING.getOrDefault(p, "a policy this adapter does not know"));
    }

    @Override
    public void setPolicy(String name) throws CacheException {
        String p = parse(name);
        if (shared) throw new CacheException.Refused(SHARED_REFUSAL);
        Object r = cmd("CONFIG", "SET", "maxmemory-policy", p);
        if (r instanceof ErrorReply e) {
            if (denied(e)) throw new CacheException.Refused(CONFIG_DENIED);
            throw new CacheException("Redis at " + client.endpoint() + ": CONFIG SET failed: " + e.message());
        }
    }

    @Override
    public void flush() throws CacheException {
        if (prefix.isEmpty() && shared) {
            throw new CacheException.Refused("this session has no key prefix on a shared Redis: a flush would delete other sessions' keys");
        }
        String cursor = "0";
        String[] next = new String[1];
        do {
            List<String> keys = scanPage(cursor, next);
            for (int i = 0; i < keys.size(); i += UNLINK_BATCH) {
                List<String> args = new ArrayList<>();
                args.add("UNLINK");
                args.addAll(keys.subList(i, Math.min(keys.size(), i + UNLINK_BATCH)));
                ok(args.toArray(String[]::new));
            }
            cursor = next[0];
        } while (!"0".equals(cursor));
    }

    @Override
    public void close() { client.close(); }
}
