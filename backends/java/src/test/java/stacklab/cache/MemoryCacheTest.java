package stacklab.cache;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** The in-process cache's bound and its four policies, on a clock the test moves. */
class MemoryCacheTest {
    private final AtomicLong now = new AtomicLong(1_000);

    /** Room for three 10-byte entries (key 1 byte + value 9 bytes). */
    private MemoryCache cache(String policy) throws Exception { return new MemoryCache(policy, 30, now::get); }

    private static String v(String k) { return k.repeat(9); }

    private static List<String> keys(MemoryCache c) {
        return c.items(20).stream().map(Cache.Item::key).toList();
    }

    @Test
    void lruEvictsTheEntryReadOrWrittenLongestAgo() throws Exception {
        MemoryCache c = cache("");
        c.set("a", v("a"), 0);
        c.set("b", v("b"), 0);
        c.set("c", v("c"), 0);
        c.get("a");
        c.set("d", v("d"), 0);
        assertEquals(List.of("d", "a", "c"), keys(c));
        assertEquals(1, c.stats().evictions());
        assertEquals("lru", c.policy().policy());
    }

    @Test
    void lfuEvictsTheFewestUsesThenTheLeastRecent() throws Exception {
        MemoryCache c = cache("LFU ");
        c.set("a", v("a"), 0);
        c.set("b", v("b"), 0);
        c.set("c", v("c"), 0);
        c.get("a");
        c.get("b");
        c.set("d", v("d"), 0);
        assertNull(c.get("c"));
        assertNotNull(c.get("a"));
    }

    @Test
    void fifoIgnoresReadsAndTtlEvictsTheEarliestExpiry() throws Exception {
        MemoryCache f = cache("fifo");
        f.set("a", v("a"), 0);
        f.set("b", v("b"), 0);
        f.set("c", v("c"), 0);
        f.get("a");
        f.set("d", v("d"), 0);
        assertNull(f.get("a"));
        MemoryCache t = cache("ttl");
        t.set("a", v("a"), 0);
        t.set("b", v("b"), 5000);
        t.set("c", v("c"), 1000);
        t.set("d", v("d"), 9000);
        assertNull(t.get("c"));
        assertNotNull(t.get("a"));
    }

    @Test
    void switchingPolicyKeepsEntriesAndExpiredEntriesVanish() throws Exception {
        MemoryCache c = cache("lru");
        c.set("a", v("a"), 100);
        c.setPolicy("fifo");
        assertEquals("fifo", c.policy().policy());
        assertEquals(List.of("a"), keys(c));
        assertEquals(100L, c.items(20).get(0).ttlMs());
        now.addAndGet(100);
        assertNull(c.get("a"));
        assertEquals(0, c.stats().evictions());
        assertEquals(0, c.stats().bytes());
        assertThrows(CacheException.UnknownPolicy.class, () -> c.setPolicy("random"));
    }

    @Test
    void anEntryLargerThanTheCacheIsNotKeptAndFlushKeepsCounters() throws Exception {
        MemoryCache c = cache("");
        c.set("a", v("a"), 0);
        c.get("a");
        c.get("zz");
        c.set("a", "x".repeat(100), 0);
        assertNull(c.get("a"));
        c.set("b", v("b"), 0);
        c.flush();
        Cache.Stats s = c.stats();
        assertEquals(0, s.bytes());
        assertEquals(1, s.hits());
        assertEquals(2, s.misses());
        assertEquals(30, s.maxBytes());
    }
}
