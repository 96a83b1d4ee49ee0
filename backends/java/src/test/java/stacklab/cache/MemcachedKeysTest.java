package stacklab.cache;

import static org.junit.jupiter.api.Assertions.*;

import org.junit.jupiter.api.Test;

/** Memcached's addresses, wire keys, expiry times and metadump lines (CONTRACT.md §13). */
class MemcachedKeysTest {
    @Test
    void addressesTakeTheContractsForms() throws Exception {
        assertEquals(11211, MemcachedCache.parseAddr("memcache://u:p@host").getPort());
        assertEquals("host", MemcachedCache.parseAddr("memcached://host:1234/x").getHostString());
        assertEquals(1234, MemcachedCache.parseAddr("host:1234").getPort());
        assertThrows(CacheException.class, () -> MemcachedCache.parseAddr("http://host:1"));
    }

    @Test
    void keysMemcachedWouldRefuseAreHexed() {
        assertEquals("p:user:1", MemcachedCache.wireKey("p:", "user:1"));
        assertEquals("p:~x7e61", MemcachedCache.wireKey("p:", "~a"));
        assertEquals("p:~x612062", MemcachedCache.wireKey("p:", "a b"));
        assertTrue(MemcachedCache.wireKey("p:", "é".repeat(200)).startsWith("p:~h"));
        assertEquals("a b", MemcachedCache.logicalKey("p:", MemcachedCache.wireKey("p:", "a b")));
    }

    @Test
    void expiryIsWholeSecondsUpAndAbsoluteBeyondThirtyDays() {
        assertEquals(1, MemcachedCache.exptime(1, 0));
        assertEquals(300, MemcachedCache.exptime(300_000, 0));
        assertEquals(2, MemcachedCache.exptime(1001, 0));
        long now = 1_700_000_000_000L;
        assertEquals(now / 1000 + 31L * 86400, MemcachedCache.exptime(31L * 86400 * 1000, now));
    }

    @Test
    void metadumpLinesAreParsedAndKeysDecoded() {
        var d = MemcachedCache.parseDumpLine("key=s%3Auser%3A1 exp=-1 la=1700000000 cas=7 fetch=no cls=1 size=70");
        assertEquals("s:user:1", d.key());
        assertEquals(1700000000L, d.la());
        assertEquals(7, d.cas());
        assertEquals(70, d.size());
        assertNull(MemcachedCache.parseDumpLine("END"));
    }
}
