package stacklab.users;

import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import stacklab.cache.Cache;
import stacklab.cache.CacheException;
import stacklab.config.Limits;
import stacklab.http.ApiError;
import stacklab.security.Guards;
import stacklab.security.Passwords;
import stacklab.store.NewRow;
import stacklab.store.Store;
import stacklab.store.StoreException;

/**
 * Analysis (CONTRACT.md §9): how big the session's data is, how its cache is doing, and how
 * fast its stack reads, writes and hashes, measured on demand. The benchmark writes rows of its
 * own ({@code bench-…}) straight to the store with one precomputed hash, so the figure is the
 * database's and not the hash function's, and removes them after, also when a step fails.
 */
public final class Analysis {
    private static final SecureRandom RANDOM = new SecureRandom();

    private Analysis() {}

    public static ApiError fromCache(CacheException e) {
        if (e instanceof CacheException.UnknownPolicy) return ApiError.invalid("policy", e.getMessage());
        if (e instanceof CacheException.Refused) return ApiError.refused(e.getMessage());
        return ApiError.unavailable("the cache", e.getMessage());
    }

    public static Map<String, Object> overview(Session s) {
        Store.Size db;
        try {
            db = s.store().stats();
        } catch (StoreException e) {
            throw ApiError.unavailable("the database", e.getMessage());
        }
        Cache.Stats c;
        try {
            c = s.cache().stats();
        } catch (CacheException e) {
            throw fromCache(e);
        }
        Map<String, Object> database = new LinkedHashMap<>();
        database.put("engine", db.engine());
        database.put("size_bytes", db.sizeBytes());
        database.put("rows", db.rows());
        Map<String, Object> cache = new LinkedHashMap<>();
        cache.put("engine", s.cache().engine());
        cache.put("stats", c.json());
        long lookups = c.hits() + c.misses();
        cache.put("hit_ratio", lookups == 0 ? null : (double) c.hits() / lookups);
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("database", database);
        out.put("cache", cache);
        return out;
    }

    /** Latencies sorted; pN = the element at ceil(ops × N/100) − 1. */
    static Map<String, Object> figures(List<Double> latMs, double wallMs) {
        double[] d = latMs.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("ops", d.length);
        m.put("ops_per_sec", wallMs <= 0 ? 0.0 : d.length / (wallMs / 1000));
        m.put("p50_ms", pct(d, 50));
        m.put("p95_ms", pct(d, 95));
        m.put("p99_ms", pct(d, 99));
        int step = Math.max(d.length / 500, 1);
        List<Double> samples = new ArrayList<>();
        for (int i = 0; i < d.length; i += step) samples.add(d[i]);
        m.put("samples_ms", samples);
        return m;
    }

    static double pct(double[] sorted, int n) {
        if (sorted.length == 0) return 0;
        int i = (int) Math.max(Math.ceil(sorted.length * n / 100.0) - 1, 0);
        return sorted[Math.min(i, sorted.length - 1)];
    }

    private static double ms(long startNanos) { return (System.nanoTime() - startNanos) / 1e6; }

    private static void quiet(Runnable r) {
        try {
            r.run();
        } catch (ApiError ignored) {
            // a read that failed is still timed; the benchmark goes on
        }
    }

    public static Map<String, Object> benchmark(Session s, Limits limits, Guards guards, long reads, long writes) {
        int top = Limits.MAX_BENCHMARK_OPS;
        if (reads < 1 || reads > top) throw ApiError.invalid("reads", "reads is between 1 and " + top);
        if (writes < 1 || writes > top) throw ApiError.invalid("writes", "writes is between 1 and " + top);
        return guards.benchmark(s.code(), () -> run(s, limits, guards, (int) reads, (int) writes));
    }

    private static Map<String, Object> run(Session s, Limits limits, Guards guards, int reads, int writes) {
        byte[] t = new byte[4];
        RANDOM.nextBytes(t);
        String tag = HexFormat.of().formatHex(t);
        String password = s.hash("benchmark-password");
        List<Long> ids = new ArrayList<>();
        Map<String, Object> out = new LinkedHashMap<>();
        try {
            List<Double> lat = new ArrayList<>();
            long wall = System.nanoTime();
            for (int i = 0; i < writes; i++) {
                String name = "bench-" + tag + "-" + i;
                NewRow row = new NewRow(name, name, name + "@bench.invalid", name + "@bench.invalid", "", password, 0);
                long t0 = System.nanoTime();
                ids.add(store(() -> s.store().insert(row)));
                lat.add(ms(t0));
            }
            out.put("writes", figures(lat, ms(wall)));

            lat = new ArrayList<>();
            wall = System.nanoTime();
            for (int i = 0; i < reads; i++) {
                long id = ids.get(i % ids.size());
                long t0 = System.nanoTime();
                store(() -> s.store().get(id));
                lat.add(ms(t0));
            }
            out.put("db_reads", figures(lat, ms(wall)));

            // Reads through the cache: the first read of each id fills it.
            Trace trace = new Trace();
            for (long id : ids.subList(0, Math.min(reads, ids.size()))) quiet(() -> s.get(id, trace));
            lat = new ArrayList<>();
            int cycle = Math.min(ids.size(), reads);
            wall = System.nanoTime();
            for (int i = 0; i < reads; i++) {
                long id = ids.get(i % cycle);
                long t0 = System.nanoTime();
                quiet(() -> s.get(id, trace));
                lat.add(ms(t0));
            }
            out.put("cached_reads", figures(lat, ms(wall)));
        } finally {
            Trace trace = new Trace();
            for (long id : ids) quiet(() -> s.delete(id, trace));
        }
        out.put("cache_engine", s.cache().engine());
        List<Map<String, Object>> hashing = new ArrayList<>();
        for (String mode : Passwords.MODES) {
            Passwords p = new Passwords(mode, limits.bcryptCost(), "benchmark-pepper");
            double[] lat = new double[3];
            for (int i = 0; i < 3; i++) {
                long t0 = System.nanoTime();
                guards.hash(() -> p.hash("correct horse battery"));
                lat[i] = ms(t0);
            }
            Arrays.sort(lat);
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("mode", mode);
            m.put("ms", pct(lat, 50));
            hashing.add(m);
        }
        out.put("password_hashing", hashing);
        return out;
    }

    interface StoreCall<T> {
        T run() throws StoreException;
    }

    private static <T> T store(StoreCall<T> c) {
        try {
            return c.run();
        } catch (StoreException e) {
            throw ApiError.unavailable("the database", e.getMessage());
        }
    }
}
