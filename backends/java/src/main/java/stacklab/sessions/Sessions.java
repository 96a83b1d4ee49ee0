package stacklab.sessions;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.ReentrantLock;
import stacklab.cache.Cache;
import stacklab.cache.CacheException;
import stacklab.cache.MemcachedCache;
import stacklab.cache.MemoryCache;
import stacklab.cache.NoCache;
import stacklab.cache.RedisCache;
import stacklab.config.Config;
import stacklab.http.ApiError;
import stacklab.security.FieldCrypto;
import stacklab.security.Guards;
import stacklab.security.Passwords;
import stacklab.store.SqlStore;
import stacklab.store.Store;
import stacklab.store.StoreException;
import stacklab.users.Session;

/**
 * The sessions this instance serves and their open connections (CONTRACT.md §3, §14). A
 * request names its session; the instance fetches its descriptor from control, opens its store
 * and cache once and keeps them while the session is used. The set is bounded (least recently
 * used closed first), idle sessions are closed by {@link #sweep}, and a descriptor is fetched
 * again after {@code descriptor_ttl_ms}. Opening is serialized per session (one lock per code),
 * so a burst of first requests fetches and opens it once.
 */
public final class Sessions {
    private record Open(Session session, long fetchedNanos) {}

    private final Control control;
    private final Config config;
    private final Guards guards;
    private final Map<String, Open> open = new ConcurrentHashMap<>();
    private final Map<String, ReentrantLock> opening = new ConcurrentHashMap<>();

    public Sessions(Control control, Config config, Guards guards) {
        this.control = control;
        this.config = config;
        this.guards = guards;
    }

    public Control control() { return control; }

    private Session fresh(String code) {
        Open o = open.get(code);
        if (o != null && System.nanoTime() - o.fetchedNanos < config.descriptorTtlMs() * 1_000_000) {
            o.session.touch();
            return o.session;
        }
        return null;
    }

    /** The session's open stack, opening it if needed. */
    public Session get(String code) {
        Session s = fresh(code);
        if (s != null) return s;
        ReentrantLock lock = opening.computeIfAbsent(code, k -> new ReentrantLock());
        lock.lock();
        try {
            s = fresh(code);
            return s != null ? s : refresh(code);
        } finally {
            lock.unlock();
            opening.remove(code, lock);
        }
    }

    private Session refresh(String code) {
        Descriptor d = control.fetch(code);
        if (d == null) {
            close(code);
            throw ApiError.sessionExpired();
        }
        Open o = open.get(code);
        if (o != null && o.session.descriptor().sameStack(d)) {
            open.put(code, new Open(o.session, System.nanoTime()));
            o.session.touch();
            return o.session;
        }
        close(code);
        Session session = openSession(d);
        if (open.size() >= config.maxSessions()) {
            open.entrySet().stream().min((a, b) -> Long.compare(a.getValue().session.lastUsedMs(), b.getValue().session.lastUsedMs()))
                    .ifPresent(victim -> {
                        System.err.println("session " + Session.logId(victim.getKey()) + " closed: more than " + config.maxSessions() + " sessions open");
                        close(victim.getKey());
                    });
        }
        open.put(code, new Open(session, System.nanoTime()));
        return session;
    }

    /** Connects the descriptor's store and cache; an engine that cannot be reached is a 503. */
    Session openSession(Descriptor d) {
        Passwords passwords;
        try {
            passwords = new Passwords(d.passwordStorage(), config.limits().bcryptCost(), d.pepper());
        } catch (IllegalArgumentException e) {
            throw ApiError.internal(e.getMessage());
        }
        FieldCrypto crypto = null;
        if (d.encrypted()) {
            try {
                crypto = new FieldCrypto(d.encryptionKey());
            } catch (FieldCrypto.CryptoException e) {
                throw ApiError.internal(e.getMessage());
            }
        }
        // A policy the cache does not have is refused before anything connects.
        try {
            switch (d.cacheEngine()) {
                case "memory" -> MemoryCache.parse(d.cachePolicy().isBlank() ? "lru" : d.cachePolicy());
                case "redis" -> { if (!d.cachePolicy().isBlank()) RedisCache.parse(d.cachePolicy()); }
                default -> { }
            }
        } catch (CacheException.UnknownPolicy e) {
            throw ApiError.invalid("policy", e.getMessage());
        }
        Store store;
        try {
            if (d.dbEngine().equals("mongodb")) {
                throw new StoreException("the Java runtime has no MongoDB adapter (see backends/java/README.md)");
            }
            store = SqlStore.open(d.dbEngine(), d.dbUrl(), config.dbConnectionsPerSession());
        } catch (StoreException e) {
            throw ApiError.unavailable(d.dbEngine(), e.getMessage());
        }
        Cache cache;
        try {
            cache = switch (d.cacheEngine()) {
                case "memory" -> new MemoryCache(d.cachePolicy(), d.maxBytes(), System::currentTimeMillis);
                case "redis" -> RedisCache.open(d.cacheUrl(), d.keyPrefix(), d.shared(), d.cachePolicy(), d.maxBytes());
                case "memcached" -> MemcachedCache.open(d.cacheUrl(), d.keyPrefix(), d.shared());
                default -> new NoCache();
            };
        } catch (CacheException e) {
            store.close();
            throw e instanceof CacheException.UnknownPolicy ? ApiError.invalid("policy", e.getMessage())
                    : ApiError.unavailable("the cache", e.getMessage());
        }
        return new Session(d, store, cache, crypto, passwords, guards);
    }

    /** Closes a session's connections (it ended, or its stack changed). */
    public void close(String code) {
        Open o = open.remove(code);
        if (o != null) o.session.close();
    }

    /** Closes sessions idle longer than {@code session_idle_ms}. */
    public void sweep() {
        long now = System.currentTimeMillis();
        for (var e : open.entrySet()) {
            if (now - e.getValue().session.lastUsedMs() > config.sessionIdleMs()) {
                System.err.println("session " + Session.logId(e.getKey()) + " closed: idle");
                close(e.getKey());
            }
        }
    }

    public void closeAll() {
        for (String code : open.keySet()) close(code);
    }
}
