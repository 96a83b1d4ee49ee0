package stacklab.cache;

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import net.spy.memcached.ConnectionFactoryBuilder;
import net.spy.memcached.ConnectionObserver;
import net.spy.memcached.FailureMode;
import net.spy.memcached.MemcachedClient;

/**
 * The Memcached cache (CONTRACT.md §13). Reads, writes and deletes go through spymemcached;
 * the commands it does not speak — {@code lru_crawler metadump all} for listing and flushing
 * the session's keys, {@code mg <key> s t v u} for previews that do not bump the LRU, and
 * {@code stats} read raw — go over a short-lived text-protocol connection of this class.
 * Keys are {@code prefix + key}; a logical key Memcached would not take is stored as
 * {@code prefix~x<hex>}, or {@code prefix~h<sha256 hex>} when even that is too long. Memcached
 * has one eviction policy, LRU, so a change is refused.
 */
public final class MemcachedCache implements Cache {
    private static final int MAX_KEY_BYTES = 250, MAX_PREFIX_BYTES = 150;
    public static final int TIMEOUT_MS = 3000;
    private static final int ITEMS_DUMP_BUDGET = 10_000, FLUSH_DUMP_BUDGET = 1_000_000;
    private static final int BUSY_WAIT_MS = 100, BUSY_RETRIES = 30, DELETE_BATCH = 100;
    private static final long RELATIVE_EXPIRY_MAX = 30L * 24 * 3600;
    static final String ONE_POLICY = "Memcached has one eviction policy, LRU, and it cannot be switched: items are grouped by "
            + "size into slab classes, each class keeps its own segmented LRU (hot, warm and cold), and when memory runs out "
            + "the least recently used item of the class being written to is evicted. A key prefix keeps this session's keys "
            + "apart by name only: on a shared server other sessions' items compete for the same memory and can push this "
            + "session's items out.";

    private final String host;
    private final int port;
    private final String prefix;
    private final boolean shared;
    private final MemcachedClient client;
    private final AtomicLong hits = new AtomicLong(), misses = new AtomicLong();

    private MemcachedCache(String host, int port, String prefix, boolean shared, MemcachedClient client) {
        this.host = host;
        this.port = port;
        this.prefix = prefix;
        this.shared = shared;
        this.client = client;
    }

    /** {@code host:port} or {@code memcache://[user:pass@]host:port[/…]}; credentials dropped. */
    static InetSocketAddress parseAddr(String url) throws CacheException {
        CacheException invalid = new CacheException("the Memcached address is not valid; expected host:port or memcache://host:port");
        String rest = url.strip();
        int sep = rest.indexOf("://");
        if (sep >= 0) {
            if (!List.of("memcache", "memcached", "memcache+tcp").contains(rest.substring(0, sep))) throw invalid;
            rest = rest.substring(sep + 3);
        }
        rest = rest.split("[/?]", 2)[0];
        String hostPort = rest.substring(rest.lastIndexOf('@') + 1);
        if (hostPort.isEmpty() || hostPort.matches(".*\\s.*")) throw invalid;
        int colon = hostPort.lastIndexOf(':');
        String h = colon >= 0 ? hostPort.substring(0, colon) : "";
        String p = colon >= 0 ? hostPort.substring(colon + 1) : "";
        if (!h.isEmpty() && !h.endsWith(":") && p.matches("[0-9]{1,5}") && Integer.parseInt(p) <= 65535) {
            return InetSocketAddress.createUnresolved(h.replaceAll("^\\[|\\]$", ""), Integer.parseInt(p));
        }
        if (hostPort.contains(":") && !hostPort.startsWith("[")) throw invalid;
        return InetSocketAddress.createUnresolved(hostPort.replaceAll("^\\[|\\]$", ""), 11211);
    }

    static boolean printable(byte[] b) {
        for (byte x : b) if (x < 0x21 || x > 0x7e) return false;
        return true;
    }

    static String wireKey(String prefix, String key) {
        int room = MAX_KEY_BYTES - prefix.getBytes(StandardCharsets.UTF_8).length;
        byte[] raw = key.getBytes(StandardCharsets.UTF_8);
        if (raw.length > 0 && raw.length <= room && !key.startsWith("~") && printable(raw)) return prefix + key;
        if (2 + 2 * raw.length <= room) return prefix + "~x" + HexFormat.of().formatHex(raw);
        try {
            return prefix + "~h" + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(raw));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    static String logicalKey(String prefix, String wire) {
        String rest = wire.startsWith(prefix) ? wire.substring(prefix.length()) : wire;
        if (rest.startsWith("~x") && rest.substring(2).matches("([0-9a-f]{2})*")) {
            try {
                return StandardCharsets.UTF_8.newDecoder().decode(java.nio.ByteBuffer.wrap(HexFormat.of().parseHex(rest.substring(2)))).toString();
            } catch (java.nio.charset.CharacterCodingException e) {
                return rest;
            }
        }
        return rest;
    }

    /** Whole seconds rounded up, at least 1; beyond 30 days a Unix time. */
    static int exptime(long ttlMs, long nowMs) {
        long secs = Math.max(1, (ttlMs + 999) / 1000);
        if (secs <= RELATIVE_EXPIRY_MAX) return (int) secs;
        return (int) Math.min(nowMs / 1000 + secs, 0xffff_ffffL);
    }

    public static MemcachedCache open(String url, String prefix, boolean shared) throws CacheException {
        InetSocketAddress addr = parseAddr(url);
        byte[] p = prefix.getBytes(StandardCharsets.UTF_8);
        if (p.length > MAX_PREFIX_BYTES || (p.length > 0 && !printable(p))) {
            throw new CacheException("the Memcached key prefix must be printable ASCII without spaces, at most " + MAX_PREFIX_BYTES + " bytes");
        }
        String host = addr.getHostString();
        int port = addr.getPort();
        // spymemcached connects in the background and retries for ever; a session whose
        // Memcached is not there must fail now, so one round trip proves it answers first.
        try (Text t = new Text(host, port)) {
            t.send("version");
            String line = t.line();
            if (!line.startsWith("VERSION")) throw new CacheException("Memcached at " + host + ":" + port + ": version refused: " + line);
        } catch (IOException e) {
            throw new CacheException("Memcached at " + host + ":" + port + ": connect failed: " + e.getMessage());
        }
        // spymemcached connects in the background, and in Cancel mode an operation sent before
        // the connection is up is cancelled (read as a miss): the client is handed out only once
        // it is connected, within TIMEOUT_MS.
        CountDownLatch connected = new CountDownLatch(1);
        ConnectionObserver observer = new ConnectionObserver() {
            @Override public void connectionEstablished(SocketAddress sa, int reconnectCount) { connected.countDown(); }
            @Override public void connectionLost(SocketAddress sa) {}
        };
        MemcachedClient client;
        try {
            client = new MemcachedClient(new ConnectionFactoryBuilder()
                    .setProtocol(ConnectionFactoryBuilder.Protocol.TEXT)
                    .setOpTimeout(TIMEOUT_MS)
                    .setFailureMode(FailureMode.Cancel)
                    .setDaemon(true)
                    .setInitialObservers(List.of(observer))
                    .build(), List.of(new InetSocketAddress(host, port)));
        } catch (IOException e) {
            throw new CacheException("Memcached at " + host + ":" + port + ": connect failed: " + e.getMessage());
        }
        try {
            if (!connected.await(TIMEOUT_MS, TimeUnit.MILLISECONDS)) {
                client.shutdown();
                throw new CacheException("Memcached at " + host + ":" + port + ": not connected within " + TIMEOUT_MS + " ms");
            }
        } catch (InterruptedException e) {
            client.shutdown();
            Thread.currentThread().interrupt();
            throw new CacheException("Memcached at " + host + ":" + port + ": interrupted while connecting");
        }
        return new MemcachedCache(host, port, prefix, shared, client);
    }

    private CacheException failed(String what, Exception e) {
        return new CacheException("Memcached at " + host + ":" + port + ": " + what + " failed: " + e);
    }

    @Override public String engine() { return "memcached"; }

    @Override
    public String get(String key) throws CacheException {
        Object v;
        try {
            v = client.get(wireKey(prefix, key));
        } catch (RuntimeException e) {
            throw failed("get", e);
        }
        (v == null ? misses : hits).incrementAndGet();
        return v == null ? null : v instanceof String s ? s : null;
    }

    @Override
    public void set(String key, String value, long ttlMs) throws CacheException {
        try {
            Boolean ok = client.set(wireKey(prefix, key), exptime(ttlMs, System.currentTimeMillis()), value).get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            if (!Boolean.TRUE.equals(ok)) throw new CacheException("Memcached at " + host + ":" + port + ": set was not stored");
        } catch (CacheException e) {
            throw e;
        } catch (Exception e) {
            throw failed("set", e);
        }
    }

    @Override
    public void delete(String key) throws CacheException {
        try {
            client.delete(wireKey(prefix, key)).get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            throw failed("delete", e);
        }
    }

    record Dumped(String key, long la, long cas, long size) {}

    /** {@code key=… exp=… la=… cas=… fetch=… cls=… size=…}; null for anything else. */
    static Dumped parseDumpLine(String line) {
        String key = null, la = null, cas = "0", size = "0";
        for (String part : line.split(" ")) {
            int eq = part.indexOf('=');
            if (eq <= 0) continue;
            String k = part.substring(0, eq), v = part.substring(eq + 1);
            switch (k) {
                case "key" -> key = v;
                case "la" -> la = v;
                case "cas" -> cas = v;
                case "size" -> size = v;
                default -> { }
            }
        }
        if (key == null || la == null || !la.matches("-?[0-9]+")) return null;
        try {
            key = URLDecoder.decode(key.replace("+", "%2B"), StandardCharsets.UTF_8);
        } catch (IllegalArgumentException ignored) {
            // not URL-encoded after all: kept as it is
        }
        return new Dumped(key, Long.parseLong(la), cas.matches("[0-9]+") ? Long.parseLong(cas) : 0,
                size.matches("[0-9]+") ? Long.parseLong(size) : 0);
    }

    private List<Dumped> metadump(Text t, int budget) throws IOException, CacheException {
        for (int busy = 0; ; busy++) {
            t.send("lru_crawler metadump all");
            List<Dumped> found = new ArrayList<>();
            int lines = 0;
            String busyLine = null;
            while (true) {
                String line = t.line();
                if (line.equals("END")) break;
                if (line.startsWith("BUSY") || line.contains("try again")) {
                    busyLine = line;
                    break;
                }
                if (line.startsWith("ERROR") || line.contains("_ERROR")) {
                    throw new CacheException("Memcached at " + host + ":" + port + ": lru_crawler metadump refused: " + line);
                }
                Dumped d = parseDumpLine(line);
                if (d != null && d.key().startsWith(prefix)) found.add(d);
                if (++lines >= budget) return found; // the connection is dropped with the rest unread
            }
            if (busyLine == null) return found;
            if (busy >= BUSY_RETRIES) throw new CacheException("Memcached at " + host + ":" + port + ": the LRU crawler stayed busy: " + busyLine);
            try {
                Thread.sleep(BUSY_WAIT_MS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new CacheException("interrupted");
            }
        }
    }

    @Override
    public List<Item> items(int limit) throws CacheException {
        limit = Math.min(limit, MAX_LISTED_ITEMS);
        if (limit <= 0) return List.of();
        List<Dumped> found;
        try (Text t = new Text(host, port)) {
            found = metadump(t, ITEMS_DUMP_BUDGET);
        } catch (IOException e) {
            throw failed("lru_crawler metadump", e);
        }
        found.sort(Comparator.comparingLong(Dumped::la).reversed().thenComparing(Comparator.comparingLong(Dumped::cas).reversed()));
        List<Item> out = new ArrayList<>();
        try (Text t = new Text(host, port)) {
            for (Dumped d : found.subList(0, Math.min(limit, found.size()))) {
                t.send("mg " + d.key() + " s t v u");
                String head = t.line();
                if (head.startsWith("EN")) continue; // gone since the dump
                if (!head.startsWith("VA ")) throw new CacheException("Memcached at " + host + ":" + port + ": mg answered " + head);
                String[] parts = head.split(" ");
                int n = Integer.parseInt(parts[1]);
                Long ttl = null;
                for (int i = 2; i < parts.length; i++) {
                    if (parts[i].startsWith("t") && parts[i].substring(1).matches("-?[0-9]+")) {
                        long v = Long.parseLong(parts[i].substring(1));
                        ttl = v >= 0 ? v * 1000 : null;
                    }
                }
                byte[] value = t.bytes(n);
                out.add(new Item(logicalKey(prefix, d.key()), ttl, d.size(), Cache.preview(value)));
            }
        } catch (IOException | RuntimeException e) {
            throw failed("mg", e);
        }
        return out;
    }

    @Override
    public Stats stats() throws CacheException {
        Map<String, String> got = new java.util.HashMap<>();
        try (Text t = new Text(host, port)) {
            t.send("stats");
            for (String line = t.line(); !line.equals("END"); line = t.line()) {
                String[] p = line.split(" ");
                if (p.length >= 3 && p[0].equals("STAT")) got.put(p[1], p[2]);
            }
        } catch (IOException e) {
            throw failed("stats", e);
        }
        return new Stats(hits.get(), misses.get(), num(got, "evictions"), num(got, "bytes"), num(got, "limit_maxbytes"));
    }

    private static long num(Map<String, String> m, String k) {
        String v = m.getOrDefault(k, "");
        return v.matches("[0-9]{1,18}") ? Long.parseLong(v) : 0;
    }

    @Override
    public Policy policy() { return new Policy("lru", List.of("lru"), false, ONE_POLICY); }

    @Override
    public void setPolicy(String name) throws CacheException { throw new CacheException.Refused(ONE_POLICY); }

    @Override
    public void flush() throws CacheException {
        if (prefix.isEmpty() && shared) {
            throw new CacheException.Refused("this session has no key prefix on a shared Memcached: a flush would delete other sessions' items");
        }
        List<Dumped> found;
        try (Text t = new Text(host, port)) {
            found = metadump(t, FLUSH_DUMP_BUDGET);
        } catch (IOException e) {
            throw failed("lru_crawler metadump", e);
        }
        try {
            for (int i = 0; i < found.size(); i += DELETE_BATCH) {
                List<java.util.concurrent.Future<Boolean>> pending = new ArrayList<>();
                for (Dumped d : found.subList(i, Math.min(found.size(), i + DELETE_BATCH))) pending.add(client.delete(d.key()));
                for (var f : pending) f.get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            }
        } catch (Exception e) {
            throw failed("delete", e);
        }
    }

    @Override
    public void close() { client.shutdown(1, TimeUnit.SECONDS); }

    /** One text-protocol connection for the commands spymemcached does not speak. */
    static final class Text implements AutoCloseable {
        private final Socket socket = new Socket();
        private final InputStream in;
        private final OutputStream out;

        Text(String host, int port) throws IOException {
            try {
                socket.connect(new InetSocketAddress(host, port), TIMEOUT_MS);
                socket.setSoTimeout(TIMEOUT_MS);
                in = new BufferedInputStream(socket.getInputStream());
                out = socket.getOutputStream();
            } catch (IOException e) {
                socket.close();
                throw e;
            }
        }

        void send(String command) throws IOException {
            out.write((command + "\r\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
        }

        String line() throws IOException {
            ByteArrayOutputStream b = new ByteArrayOutputStream(64);
            for (int c = in.read(); c != '\n'; c = in.read()) {
                if (c < 0) throw new EOFException("Memcached closed the connection");
                if (c != '\r') b.write(c);
            }
            return b.toString(StandardCharsets.UTF_8);
        }

        byte[] bytes(int n) throws IOException {
            byte[] b = in.readNBytes(n);
            if (b.length != n) throw new EOFException("Memcached closed the connection");
            line();
            return b;
        }

        @Override
        public void close() throws IOException { socket.close(); }
    }
}
