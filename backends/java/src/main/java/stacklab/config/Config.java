package stacklab.config;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The instance's settings: the {@code [backend]} section of a stacklab config file
 * (CONTRACT.md §2), read raw and then validated in one step that reports every problem with its
 * key before any port is bound. The defaults are the Rust runtime's.
 */
public record Config(
        InetSocketAddress addr,
        String controlUrl,
        int maxSessions,
        long sessionIdleMs,
        int dbConnectionsPerSession,
        long descriptorTtlMs,
        Limits limits) {

    public static final String DEFAULT_ADDR = "127.0.0.1:0";
    public static final String DEFAULT_CONTROL_URL = "http://127.0.0.1:9000";
    /** Sessions open at once. */
    public static final int DEFAULT_MAX_SESSIONS = 256;
    /** An open session unused this long is closed. */
    public static final long DEFAULT_SESSION_IDLE_MS = 300_000;
    public static final int DEFAULT_DB_CONNECTIONS = 4;
    /** How long a fetched descriptor is trusted. */
    public static final long DEFAULT_DESCRIPTOR_TTL_MS = 30_000;

    private static final Set<String> INT_KEYS = Set.of(
            "max_sessions", "session_idle_ms", "db_connections_per_session", "descriptor_ttl_ms",
            "bcrypt_cost", "max_body_bytes", "graphql_max_depth", "graphql_max_complexity",
            "graphql_max_fields", "graphql_max_hashes", "max_concurrent_hashes", "hash_wait_ms",
            "max_concurrent_benchmarks");
    private static final Set<String> STR_KEYS = Set.of("addr", "control_url");

    /** Every problem found, each `backend.KEY: what is wrong`. */
    public static final class ConfigException extends Exception {
        public final List<String> problems;

        public ConfigException(List<String> problems) {
            super(String.join("; ", problems));
            this.problems = problems;
        }
    }

    public static Config load(Path file) throws ConfigException {
        if (file == null) return fromSection(Map.of());
        String text;
        try {
            text = Files.readString(file);
        } catch (IOException e) {
            throw new ConfigException(List.of("config: cannot read " + file + ": " + e.getMessage()));
        }
        try {
            return fromSection(Toml.table(text, "backend"));
        } catch (Toml.TomlException e) {
            throw new ConfigException(List.of("config: " + file + " is not valid TOML: " + e.getMessage()));
        }
    }

    public static InetSocketAddress parseAddr(String text) {
        int colon = text.lastIndexOf(':');
        if (colon <= 0) return null;
        String host = text.substring(0, colon);
        String port = text.substring(colon + 1);
        if (host.startsWith("[") && host.endsWith("]")) host = host.substring(1, host.length() - 1);
        if (!port.matches("[0-9]{1,5}") || Integer.parseInt(port) > 65535) return null;
        if (!host.matches("[0-9.]+|[0-9a-fA-F:]+")) return null;
        try {
            return new InetSocketAddress(java.net.InetAddress.getByName(host), Integer.parseInt(port));
        } catch (java.net.UnknownHostException e) {
            return null;
        }
    }

    public static Config fromSection(Map<String, Object> section) throws ConfigException {
        List<String> problems = new ArrayList<>();
        for (var e : section.entrySet()) {
            String key = e.getKey();
            Object v = e.getValue();
            if (INT_KEYS.contains(key)) {
                if (!(v instanceof Long n) || n < 0) problems.add("backend." + key + ": must be a non-negative whole number");
            } else if (STR_KEYS.contains(key)) {
                if (!(v instanceof String)) problems.add("backend." + key + ": must be a string");
            } else {
                problems.add("backend: unknown field `" + key + "`");
            }
        }
        if (!problems.isEmpty()) throw new ConfigException(problems);
        String addrText = (String) section.getOrDefault("addr", DEFAULT_ADDR);
        InetSocketAddress addr = parseAddr(addrText);
        if (addr == null) problems.add("backend.addr: `" + addrText + "` is not `host:port`");
        String controlUrl = (String) section.getOrDefault("control_url", DEFAULT_CONTROL_URL);
        if (!controlUrl.startsWith("http://")) problems.add("backend.control_url: must be an http:// URL of control's admin address");
        Limits d = Limits.defaults();
        long cost = num(section, "bcrypt_cost", d.bcryptCost());
        if (cost < 4 || cost > 16) problems.add("backend.bcrypt_cost: must be between 4 and 16");
        Limits limits = new Limits(
                (int) cost,
                num(section, "max_body_bytes", d.maxBodyBytes()),
                (int) positive(section, "graphql_max_depth", d.graphqlMaxDepth(), problems),
                (int) positive(section, "graphql_max_complexity", d.graphqlMaxComplexity(), problems),
                (int) positive(section, "graphql_max_fields", d.graphqlMaxFields(), problems),
                (int) positive(section, "graphql_max_hashes", d.graphqlMaxHashes(), problems),
                (int) positive(section, "max_concurrent_hashes", d.maxConcurrentHashes(), problems),
                num(section, "hash_wait_ms", d.hashWaitMs()),
                (int) positive(section, "max_concurrent_benchmarks", d.maxConcurrentBenchmarks(), problems));
        if (!problems.isEmpty()) throw new ConfigException(problems);
        return new Config(addr, controlUrl,
                (int) Math.max(1, num(section, "max_sessions", DEFAULT_MAX_SESSIONS)),
                num(section, "session_idle_ms", DEFAULT_SESSION_IDLE_MS),
                (int) Math.max(1, num(section, "db_connections_per_session", DEFAULT_DB_CONNECTIONS)),
                num(section, "descriptor_ttl_ms", DEFAULT_DESCRIPTOR_TTL_MS),
                limits);
    }

    public Config withAddr(InetSocketAddress a) { return new Config(a, controlUrl, maxSessions, sessionIdleMs, dbConnectionsPerSession, descriptorTtlMs, limits); }
    public Config withControlUrl(String u) { return new Config(addr, u, maxSessions, sessionIdleMs, dbConnectionsPerSession, descriptorTtlMs, limits); }

    private static long num(Map<String, Object> s, String key, long dflt) {
        Object v = s.get(key);
        return v == null ? dflt : (Long) v;
    }

    private static long positive(Map<String, Object> s, String key, long dflt, List<String> problems) {
        long v = num(s, key, dflt);
        if (v == 0) {
            problems.add("backend." + key + ": must be at least 1");
            return dflt;
        }
        return Math.min(v, Integer.MAX_VALUE);
    }
}
