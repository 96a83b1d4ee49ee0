package stacklab.users;

/**
 * What one request spent in the cache and the database, and its cache outcome, which the HTTP
 * layer turns into {@code Server-Timing} and {@code x-stacklab-cache} (CONTRACT.md §4). One per
 * request, used by the thread handling it.
 */
public final class Trace {
    private long cacheNanos, dbNanos;
    private String outcome;

    /** A miss anywhere makes the request a miss; an earlier bypass stays; else the latest. */
    public void record(String o) {
        if ("miss".equals(outcome) || "miss".equals(o)) outcome = "miss";
        else if (!"bypass".equals(outcome)) outcome = o;
    }

    public void addCache(long nanos) { cacheNanos += nanos; }
    public void addDb(long nanos) { dbNanos += nanos; }
    public double cacheMs() { return cacheNanos / 1e6; }
    public double dbMs() { return dbNanos / 1e6; }
    public String outcome() { return outcome; }
}
