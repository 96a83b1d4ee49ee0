package stacklab.redis;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.UUID;
import org.junit.jupiter.api.Test;

/** The hand-written RESP client: the wire format on bytes, then against a live Redis. */
class RespClientTest {
    static String redisUrl() {
        String url = System.getenv("STACKLAB_TEST_REDIS_URL");
        if (url == null || url.isEmpty()) {
            if ("1".equals(System.getenv("STACKLAB_REQUIRE_SERVICES"))) fail("STACKLAB_TEST_REDIS_URL is not set and services are required");
            assumeTrue(false, "no Redis: STACKLAB_TEST_REDIS_URL is not set");
        }
        return url;
    }

    @Test
    void writesCommandsAsArraysOfBulkStrings() throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        RespClient.write(out, List.of("SET", "k", "é"));
        assertEquals("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\né\r\n", out.toString(StandardCharsets.UTF_8));
    }

    @Test
    void readsEveryReplyType() throws Exception {
        String wire = "+OK\r\n-ERR nope\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n*-1\r\n";
        var in = new ByteArrayInputStream(wire.getBytes(StandardCharsets.UTF_8));
        assertEquals("OK", RespClient.read(in));
        assertEquals(new RespClient.ErrorReply("ERR nope"), RespClient.read(in));
        assertEquals(42L, RespClient.read(in));
        assertEquals("hello", RespClient.text(RespClient.read(in)));
        assertNull(RespClient.read(in));
        List<?> arr = (List<?>) RespClient.read(in);
        assertEquals("a", RespClient.text(arr.get(0)));
        assertEquals(1L, arr.get(1));
        assertNull(RespClient.read(in));
        assertThrows(java.io.EOFException.class, () -> RespClient.read(in));
        assertThrows(RespClient.RedisException.class, () -> RespClient.read(new ByteArrayInputStream("?x\r\n".getBytes(StandardCharsets.US_ASCII))));
    }

    @Test
    void refusesUrlsThatAreNotRedisAndNeverQuotesThem() {
        var e = assertThrows(RespClient.RedisException.class, () -> RespClient.forUrl("http://user:secret@host:1", 100));
        assertFalse(e.getMessage().contains("secret"));
    }

    @Test
    void talksToRedisWithPipelinesAndErrorReplies() throws Exception {
        try (RespClient c = RespClient.forUrl(redisUrl(), 3000)) {
            String key = "java-test:" + UUID.randomUUID();
            assertEquals("PONG", c.command("PING"));
            assertEquals("OK", c.command("SET", key, "välue", "PX", "60000"));
            assertEquals("välue", RespClient.text(c.command("GET", key)));
            List<Object> r = c.pipeline(List.of(List.of("PTTL", key), List.of("NOSUCHCOMMAND"), List.of("DEL", key)));
            assertTrue((Long) r.get(0) > 0);
            assertInstanceOf(RespClient.ErrorReply.class, r.get(1));
            assertEquals(1L, r.get(2));
            assertNull(c.command("GET", key));
        }
    }

    @Test
    void aServerThatIsNotThereFailsWithinTheTimeout() throws Exception {
        try (RespClient c = RespClient.forUrl("redis://127.0.0.1:1", 500)) {
            assertThrows(RespClient.RedisException.class, () -> c.command("PING"));
        }
    }
}
