package stacklab.users;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import stacklab.cache.Cache;
import stacklab.cache.CacheException;
import stacklab.config.Limits;
import stacklab.http.ApiError;
import stacklab.security.FieldCrypto;
import stacklab.security.Guards;
import stacklab.security.Passwords;
import stacklab.sessions.Descriptor;
import stacklab.store.Changes;
import stacklab.store.NewRow;
import stacklab.store.Store;
import stacklab.store.StoreException;
import stacklab.store.StoredUser;

/**
 * One open session and the users service over it: the one place that decides what REST and
 * GraphQL do, so they cannot drift (CONTRACT.md §6, §13). Reads go to the cache first, then to
 * the database, and fill the cache; writes follow the session's write policy — cache-aside
 * drops the entry, write-through replaces it. The cache holds a user in its stored form, byte
 * for byte the JSON every runtime writes, so one runtime's entry is a hit for another. A
 * failing cache never fails a request: it is logged, and a failed read counts as a miss.
 */
public final class Session implements AutoCloseable {
    /** The TTL of every entry the service writes when the descriptor's is 0. */
    public static final long DEFAULT_TTL_MS = 300_000;
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Descriptor descriptor;
    private final Store store;
    private final Cache cache;
    private final FieldCrypto crypto;
    private final Passwords passwords;
    private final Guards guards;
    private final long ttlMs;
    private volatile long lastUsedMs = System.currentTimeMillis();

    public Session(Descriptor descriptor, Store store, Cache cache, FieldCrypto crypto, Passwords passwords, Guards guards) {
        this.descriptor = descriptor;
        this.store = store;
        this.cache = cache;
        this.crypto = crypto;
        this.passwords = passwords;
        this.guards = guards;
        this.ttlMs = descriptor.ttlMs() > 0 ? descriptor.ttlMs() : DEFAULT_TTL_MS;
    }

    public Descriptor descriptor() { return descriptor; }
    public String code() { return descriptor.session(); }
    public Store store() { return store; }
    public Cache cache() { return cache; }
    public Passwords passwords() { return passwords; }
    public long lastUsedMs() { return lastUsedMs; }
    public void touch() { lastUsedMs = System.currentTimeMillis(); }

    /** How a session is named in logs: never the code itself (it is the session's cookie). */
    public static String logId(String code) {
        try {
            byte[] h = java.security.MessageDigest.getInstance("SHA-256").digest(code.getBytes(StandardCharsets.UTF_8));
            return HexFormat.of().formatHex(h).substring(0, 8);
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    // --- stored form -------------------------------------------------------------------------

    /** The cached value: compact JSON of the stored form, serde's field order. */
    public static String cachedJson(StoredUser u) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", u.id());
        m.put("username", u.username());
        m.put("email", u.email());
        m.put("full_name", u.fullName());
        m.put("password", u.password());
        m.put("created_at", u.createdAt());
        m.put("updated_at", u.updatedAt());
        try {
            return JSON.writeValueAsString(m);
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A cached value, or null when it is not the seven-field object (then it is a miss). */
    public static StoredUser fromCache(String raw) {
        JsonNode d;
        try {
            d = JSON.readTree(raw);
        } catch (java.io.IOException e) {
            return null;
        }
        if (d == null || !d.isObject()) return null;
        for (String k : List.of("id", "created_at", "updated_at")) if (!d.path(k).canConvertToExactIntegral() || !d.path(k).canConvertToLong()) return null;
        for (String k : List.of("username", "email", "full_name", "password")) if (!d.path(k).isTextual()) return null;
        return new StoredUser(d.get("id").asLong(), d.get("username").asText(), d.get("email").asText(), d.get("full_name").asText(),
                d.get("password").asText(), d.get("created_at").asLong(), d.get("updated_at").asLong());
    }

    private String seal(String v) { return crypto == null ? v : crypto.seal(v); }

    private String emailKey(String lower) { return crypto == null ? lower : crypto.index(lower); }

    private String open(String v) {
        try {
            return crypto.open(v);
        } catch (FieldCrypto.CryptoException e) {
            throw ApiError.internal(e.getMessage());
        }
    }

    /** A user as the API returns it: plaintext and stored forms. */
    public Map<String, Object> toUser(StoredUser s) {
        String email = s.email(), fullName = s.fullName();
        if (crypto != null) {
            email = open(s.email());
            fullName = s.fullName().isEmpty() ? "" : open(s.fullName());
        }
        Map<String, Object> u = new LinkedHashMap<>();
        u.put("id", s.id());
        u.put("username", s.username());
        u.put("email", email);
        u.put("full_name", fullName);
        u.put("stored_password", s.password());
        u.put("stored_email", s.email());
        u.put("created_at", s.createdAt());
        u.put("updated_at", s.updatedAt());
        return u;
    }

    // --- timed steps -------------------------------------------------------------------------

    interface DbCall<T> {
        T run(Store s) throws StoreException;
    }

    interface CacheCall<T> {
        T run(Cache c) throws CacheException;
    }

    <T> T db(Trace trace, DbCall<T> fn) throws StoreException.Conflict {
        long t = System.nanoTime();
        try {
            return fn.run(store);
        } catch (StoreException.Conflict e) {
            throw e;
        } catch (StoreException e) {
            throw ApiError.unavailable("the database", e.getMessage());
        } finally {
            trace.addDb(System.nanoTime() - t);
        }
    }

    private <T> T cacheStep(Trace trace, String what, CacheCall<T> fn) {
        long t = System.nanoTime();
        try {
            return fn.run(cache);
        } catch (CacheException e) {
            System.err.println("session " + logId(code()) + ": cache " + what + " failed: " + e.getMessage());
            return null;
        } finally {
            trace.addCache(System.nanoTime() - t);
        }
    }

    private void cachePut(StoredUser u, Trace trace) {
        cacheStep(trace, "write", c -> {
            c.set("user:" + u.id(), cachedJson(u), ttlMs);
            return null;
        });
    }

    private void cacheDrop(long id, Trace trace) {
        cacheStep(trace, "delete", c -> {
            c.delete("user:" + id);
            return null;
        });
    }

    /** Hashes and verifications pass the instance's hashing gate. */
    private <T> T hashing(Supplier<T> work) {
        try {
            return guards.hash(work);
        } catch (Passwords.NoPepperException e) {
            throw ApiError.internal(e.getMessage());
        }
    }

    public String hash(String password) { return hashing(() -> passwords.hash(password)); }

    // --- the service -------------------------------------------------------------------------

    public Map<String, Object> create(String username, String email, String password, String fullName, Trace trace) {
        username = Rules.username(username);
        email = Rules.email(email);
        Rules.password(password);
        fullName = fullName == null ? "" : Rules.fullName(fullName);
        String hashed = hash(password);
        long now = System.currentTimeMillis();
        NewRow row = new NewRow(username, Rules.lower(username), seal(email), emailKey(Rules.lower(email)),
                fullName.isEmpty() ? "" : seal(fullName), hashed, now);
        long id;
        try {
            id = db(trace, s -> s.insert(row));
        } catch (StoreException.Conflict e) {
            throw conflict(e, username, email);
        }
        StoredUser stored = new StoredUser(id, username, row.email(), row.fullName(), hashed, now, now);
        if (descriptor.writeThrough()) cachePut(stored, trace);
        trace.record("bypass");
        return toUser(stored);
    }

    private static ApiError conflict(StoreException.Conflict e, String username, String email) {
        return e.field.equals("email") ? ApiError.conflict("email", email) : ApiError.conflict("username", username);
    }

    /** The stored row, cache first; a miss reads the database and fills the cache. */
    public StoredUser load(long id, Trace trace) {
        String cached = cacheStep(trace, "read", c -> c.get("user:" + id));
        if (cached != null) {
            StoredUser u = fromCache(cached);
            if (u != null) {
                trace.record("hit");
                return u;
            }
        }
        trace.record(cache.engine().equals("none") ? "bypass" : "miss");
        StoredUser stored;
        try {
            stored = db(trace, s -> s.get(id));
        } catch (StoreException.Conflict e) {
            throw ApiError.internal(e.getMessage());
        }
        if (stored == null) throw ApiError.notFound(id);
        cachePut(stored, trace);
        return stored;
    }

    public Map<String, Object> get(long id, Trace trace) { return toUser(load(id, trace)); }

    public Map<String, Object> list(String q, Long limitIn, Long offsetIn, Trace trace) {
        long limit = limitIn == null ? 20 : limitIn;
        long offset = offsetIn == null ? 0 : offsetIn;
        if (limit < 1 || limit > Limits.MAX_PAGE) throw ApiError.invalid("limit", "limit must be between 1 and " + Limits.MAX_PAGE);
        if (offset < 0) throw ApiError.invalid("offset", "offset cannot be negative");
        q = q == null ? "" : Rules.trim(q);
        Store.Search search = Store.Search.ALL;
        if (!q.isEmpty()) {
            if (Rules.chars(q) > Limits.MAX_EMAIL) throw ApiError.invalid("q", "search text is at most " + Limits.MAX_EMAIL + " characters");
            if (q.indexOf('\0') >= 0) throw ApiError.invalid("q", "search text cannot contain the NUL character");
            String lower = Rules.lower(q);
            search = new Store.Search(lower, crypto == null ? null : crypto.index(lower));
        }
        Store.Search s = search;
        long lim = limit, off = offset;
        Store.Page page;
        try {
            page = db(trace, st -> st.search(s, (int) lim, off));
        } catch (StoreException.Conflict e) {
            throw ApiError.internal(e.getMessage());
        }
        trace.record("bypass");
        List<Map<String, Object>> items = new ArrayList<>();
        for (StoredUser u : page.rows()) items.add(toUser(u));
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("items", items);
        out.put("total", page.total());
        out.put("limit", limit);
        out.put("offset", offset);
        return out;
    }

    /** The changes a PATCH (or updateUser) asks for; null = not given. */
    public record Update(String username, String email, String password, String fullName) {}

    public Map<String, Object> update(long id, Update f, Trace trace) {
        String username = null, usernameKey = null, email = null, sealedEmail = null, emailKey = null, fullName = null, password = null;
        if (f.username() != null) {
            username = Rules.username(f.username());
            usernameKey = Rules.lower(username);
        }
        if (f.email() != null) {
            email = Rules.email(f.email());
            sealedEmail = seal(email);
            emailKey = emailKey(Rules.lower(email));
        }
        if (f.fullName() != null) {
            String v = Rules.fullName(f.fullName());
            fullName = v.isEmpty() ? "" : seal(v);
        }
        if (f.password() != null) {
            Rules.password(f.password());
            String p = f.password();
            password = hash(p);
        }
        Changes ch = new Changes(username, usernameKey, sealedEmail, emailKey, fullName, password, System.currentTimeMillis());
        StoredUser stored;
        try {
            stored = db(trace, s -> s.update(id, ch));
        } catch (StoreException.Conflict e) {
            throw conflict(e, username == null ? "" : username, email == null ? "" : email);
        }
        if (stored == null) throw ApiError.notFound(id);
        if (descriptor.writeThrough()) cachePut(stored, trace);
        else cacheDrop(stored.id(), trace);
        trace.record("bypass");
        return toUser(stored);
    }

    public void delete(long id, Trace trace) {
        boolean gone;
        try {
            gone = db(trace, s -> s.delete(id));
        } catch (StoreException.Conflict e) {
            throw ApiError.internal(e.getMessage());
        }
        cacheDrop(id, trace);
        trace.record("bypass");
        if (!gone) throw ApiError.notFound(id);
    }

    public boolean verifyPassword(long id, String password, Trace trace) {
        if (password.getBytes(StandardCharsets.UTF_8).length > Limits.MAX_PASSWORD_BYTES) return false;
        StoredUser stored = load(id, trace);
        return hashing(() -> passwords.verify(password, stored.password()));
    }

    @Override
    public void close() {
        try {
            store.close();
        } catch (RuntimeException e) {
            System.err.println("closing the store of session " + logId(code()) + " failed: " + e);
        }
        try {
            cache.close();
        } catch (RuntimeException e) {
            System.err.println("closing the cache of session " + logId(code()) + " failed: " + e);
        }
    }
}
