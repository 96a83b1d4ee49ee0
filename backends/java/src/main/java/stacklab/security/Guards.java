package stacklab.security;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;
import stacklab.config.Limits;
import stacklab.http.ApiError;

/**
 * Bounds on the work one request can make an instance do (CONTRACT.md §9a): at most
 * {@code maxConcurrentHashes} password hashes at once (a fair semaphore: FIFO, each waiter
 * bounded by {@code hashWaitMs}, then 503 busy); one benchmark per session and at most
 * {@code maxConcurrentBenchmarks} per instance. One Guards per instance; its counters are in
 * {@code GET /healthz}.
 */
public final class Guards {
    private final int maxHashes;
    private final long hashWaitMs;
    private final int maxBenchmarks;
    private final Semaphore hashing;
    private final Set<String> benchmarking = ConcurrentHashMap.newKeySet();
    private final AtomicLong hashes = new AtomicLong(), hashesRefused = new AtomicLong(), graphqlRefused = new AtomicLong(),
            benchmarks = new AtomicLong(), refusedSession = new AtomicLong(), refusedBusy = new AtomicLong();

    public Guards(Limits limits) {
        this.maxHashes = limits.maxConcurrentHashes();
        this.hashWaitMs = limits.hashWaitMs();
        this.maxBenchmarks = limits.maxConcurrentBenchmarks();
        this.hashing = new Semaphore(maxHashes, true);
    }

    /** Runs a hash or a verification once a turn is free, or refuses with 503 busy. */
    public <T> T hash(Supplier<T> work) {
        boolean got;
        try {
            got = hashing.tryAcquire(hashWaitMs, TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            got = false;
        }
        if (!got) {
            hashesRefused.incrementAndGet();
            throw ApiError.busy("this instance is hashing " + maxHashes + " passwords already and none finished within "
                    + hashWaitMs + " ms; retry in a second");
        }
        hashes.incrementAndGet();
        try {
            return work.get();
        } finally {
            hashing.release();
        }
    }

    public <T> T benchmark(String session, Supplier<T> work) {
        synchronized (benchmarking) {
            if (benchmarking.contains(session)) {
                refusedSession.incrementAndGet();
                throw ApiError.benchmarkRunning();
            }
            if (benchmarking.size() >= maxBenchmarks) {
                refusedBusy.incrementAndGet();
                throw ApiError.busy("this instance runs " + maxBenchmarks + " benchmarks already; retry when one has finished");
            }
            benchmarking.add(session);
        }
        benchmarks.incrementAndGet();
        try {
            return work.get();
        } finally {
            benchmarking.remove(session);
        }
    }

    public void graphqlRefused() { graphqlRefused.incrementAndGet(); }

    public Map<String, Object> snapshot() {
        Map<String, Object> h = new LinkedHashMap<>();
        h.put("max", maxHashes);
        h.put("running", maxHashes - hashing.availablePermits());
        h.put("started", hashes.get());
        h.put("refused", hashesRefused.get());
        Map<String, Object> b = new LinkedHashMap<>();
        b.put("max", maxBenchmarks);
        b.put("running", benchmarking.size());
        b.put("started", benchmarks.get());
        b.put("refused_session", refusedSession.get());
        b.put("refused_busy", refusedBusy.get());
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("hashing", h);
        out.put("benchmarks", b);
        out.put("graphql_hashes_refused", graphqlRefused.get());
        return out;
    }
}
