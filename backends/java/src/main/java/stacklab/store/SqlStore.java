package stacklab.store;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * SQLite, PostgreSQL and MariaDB/MySQL over JDBC: one store, three dialects. Each session has
 * its own bounded HikariCP pool ({@code db_connections_per_session}, 5 s to get a connection,
 * idle connections closed after 60 s, none kept open when unused), closed with the session.
 * The DDL is CONTRACT.md §10's verbatim, so a table another runtime made is this table; every
 * query is parameterized and shared, so the engines cannot drift. Every connection is taken
 * and given back with try-with-resources.
 */
public final class SqlStore implements Store {
    private static final String COLUMNS = "id, username, email, full_name, password, created_at, updated_at";
    private static final long CONNECT_TIMEOUT_MS = 5000, IDLE_MS = 60_000;
    private static final String CONSTRAINTS = "CONSTRAINT users_username_key UNIQUE (username_key),\n"
            + "    CONSTRAINT users_email_key UNIQUE (email_key))";
    private static final Map<String, String> DDL = Map.of(
            "sqlite", "CREATE TABLE IF NOT EXISTS users (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
                    + "    username TEXT NOT NULL, username_key TEXT NOT NULL,\n    email TEXT NOT NULL, email_key TEXT NOT NULL,\n"
                    + "    full_name TEXT NOT NULL DEFAULT '', password TEXT NOT NULL,\n"
                    + "    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,\n    " + CONSTRAINTS,
            "postgres", "CREATE TABLE IF NOT EXISTS users (\n    id BIGSERIAL PRIMARY KEY,\n"
                    + "    username TEXT NOT NULL, username_key TEXT NOT NULL,\n    email TEXT NOT NULL, email_key TEXT NOT NULL,\n"
                    + "    full_name TEXT NOT NULL DEFAULT '', password TEXT NOT NULL,\n"
                    + "    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,\n    " + CONSTRAINTS,
            "mysql", "CREATE TABLE IF NOT EXISTS users (\n    id BIGINT AUTO_INCREMENT PRIMARY KEY,\n"
                    + "    username VARCHAR(64) NOT NULL, username_key VARCHAR(64) NOT NULL,\n"
                    + "    email VARCHAR(1024) NOT NULL, email_key VARCHAR(255) NOT NULL,\n"
                    + "    full_name VARCHAR(1024) NOT NULL DEFAULT '', password VARCHAR(1024) NOT NULL,\n"
                    + "    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,\n    " + CONSTRAINTS
                    + "\n CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci");
    private static final Map<String, String> SIZE_SQL = Map.of(
            "sqlite", "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            "postgres", "SELECT pg_total_relation_size('users')",
            "mysql", "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) FROM information_schema.tables "
                    + "WHERE table_schema = DATABASE() AND table_name = 'users'");
    private static final Map<String, String> NAMES = Map.of("sqlite", "SQLite", "postgres", "PostgreSQL", "mysql", "MySQL");
    private static final Pattern MYSQL_KEY = Pattern.compile("for key '([^']*)'");

    /**
     * One housekeeping thread for every session's pool (Hikari would start one per pool): it
     * closes connections idle longer than {@link #IDLE_MS} and keeps the pools' bounds.
     */
    private static final java.util.concurrent.ScheduledThreadPoolExecutor HOUSEKEEPER = housekeeper();

    private static java.util.concurrent.ScheduledThreadPoolExecutor housekeeper() {
        var e = new java.util.concurrent.ScheduledThreadPoolExecutor(1, r -> {
            Thread t = new Thread(r, "db-pool-housekeeper");
            t.setDaemon(true);
            return t;
        });
        e.setRemoveOnCancelPolicy(true);
        return e;
    }

    private final String engine;
    private final String where; // host:port or the file, for messages
    private final HikariDataSource pool;

    private SqlStore(String engine, String where, HikariDataSource pool) {
        this.engine = engine;
        this.where = where;
        this.pool = pool;
    }

    public static SqlStore open(String engine, String url, int maxConnections) throws StoreException {
        HikariConfig hc = new HikariConfig();
        hc.setMaximumPoolSize(maxConnections);
        hc.setMinimumIdle(0);
        hc.setIdleTimeout(IDLE_MS);
        hc.setConnectionTimeout(CONNECT_TIMEOUT_MS);
        hc.setInitializationFailTimeout(-1); // the first real query below proves it answers
        hc.setPoolName("stacklab-" + engine);
        hc.setScheduledExecutor(HOUSEKEEPER);
        String where;
        switch (engine) {
            case "sqlite" -> {
                String rest = url.startsWith("sqlite://") ? url.substring("sqlite://".length()) : url.replaceFirst("^sqlite:", "");
                int q = rest.indexOf('?');
                String file = URLDecoder.decode((q < 0 ? rest : rest.substring(0, q)).replace("+", "%2B"), StandardCharsets.UTF_8);
                String mode = "rw";
                if (q >= 0) {
                    for (String pair : rest.substring(q + 1).split("&")) if (pair.startsWith("mode=")) mode = pair.substring(5);
                }
                where = "the file " + Path.of(file).getFileName();
                if (!List.of("ro", "rw", "rwc").contains(mode)) throw new StoreException("cannot connect to SQLite: the URL's mode is not ro, rw or rwc");
                if (!mode.equals("rwc") && !Files.exists(Path.of(file))) {
                    throw new StoreException("cannot connect to SQLite: " + where + " does not exist (add ?mode=rwc to create it)");
                }
                hc.setJdbcUrl("jdbc:sqlite:" + file);
                hc.addDataSourceProperty("open_mode", mode.equals("ro") ? "1" : "6");
                hc.setConnectionInitSql("PRAGMA journal_mode = WAL");
                Properties p = new Properties();
                p.setProperty("busy_timeout", "5000");
                p.setProperty("journal_mode", "WAL");
                if (mode.equals("ro")) p.setProperty("open_mode", "1");
                hc.setDataSourceProperties(p);
                hc.setDriverClassName("org.sqlite.JDBC");
            }
            case "postgres", "mysql" -> {
                URI u;
                try {
                    u = new URI(url);
                } catch (URISyntaxException e) {
                    throw new StoreException("cannot connect to " + NAMES.get(engine) + ": the connection string is not valid");
                }
                if (u.getHost() == null) throw new StoreException("cannot connect to " + NAMES.get(engine) + ": the connection string is not valid");
                int port = u.getPort() < 0 ? (engine.equals("postgres") ? 5432 : 3306) : u.getPort();
                where = u.getHost() + ":" + port;
                String db = u.getRawPath() == null ? "" : decode(u.getRawPath().replaceAll("^/+", ""));
                String info = u.getRawUserInfo();
                if (info != null) {
                    int colon = info.indexOf(':');
                    hc.setUsername(decode(colon < 0 ? info : info.substring(0, colon)));
                    if (colon >= 0) hc.setPassword(decode(info.substring(colon + 1)));
                }
                if (engine.equals("postgres")) {
                    hc.setJdbcUrl("jdbc:postgresql://" + u.getHost() + ":" + port + "/" + db);
                    hc.setDriverClassName("org.postgresql.Driver");
                    hc.addDataSourceProperty("connectTimeout", "5");
                    hc.addDataSourceProperty("ApplicationName", "stacklab-java");
                } else {
                    hc.setJdbcUrl("jdbc:mariadb://" + u.getHost() + ":" + port + "/" + db
                            + "?connectTimeout=5000&useUnicode=true&characterEncoding=utf8mb4");
                    hc.setDriverClassName("org.mariadb.jdbc.Driver");
                    hc.setConnectionInitSql("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci");
                }
            }
            default -> throw new StoreException("the " + engine + " engine is not part of the Java runtime");
        }
        HikariDataSource pool;
        try {
            pool = new HikariDataSource(hc);
        } catch (RuntimeException e) {
            throw new StoreException("cannot connect to " + NAMES.get(engine) + " at " + where + ": " + describe(e));
        }
        SqlStore store = new SqlStore(engine, where, pool);
        try {
            store.init();
        } catch (StoreException e) {
            pool.close();
            throw new StoreException("cannot connect to " + NAMES.get(engine) + " at " + where + ": " + e.getMessage());
        }
        return store;
    }

    private static String decode(String s) { return URLDecoder.decode(s.replace("+", "%2B"), StandardCharsets.UTF_8); }

    /** One line of an engine's error, bounded; JDBC drivers do not put passwords in their messages. */
    static String describe(Throwable e) {
        Throwable t = e;
        while (t.getCause() != null && t.getCause() != t && (t.getMessage() == null || t instanceof RuntimeException)) t = t.getCause();
        String m = t.getMessage() == null ? t.getClass().getSimpleName() : t.getMessage();
        m = m.replaceAll("\\s+", " ").strip();
        return m.length() > 300 ? m.substring(0, 300) : m;
    }

    // Two instances opening a new session's database at once both run this, and PostgreSQL's
    // CREATE TABLE IF NOT EXISTS can fail on its catalog then: tried again, the table exists.
    private void init() throws StoreException {
        for (int attempt = 0; ; attempt++) {
            try (Connection c = pool.getConnection(); Statement s = c.createStatement()) {
                s.execute(DDL.get(engine));
                return;
            } catch (SQLException e) {
                if (attempt == 3) throw new StoreException(describe(e));
                try {
                    Thread.sleep(20L * (attempt + 1));
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    throw new StoreException("interrupted");
                }
            }
        }
    }

    private StoreException failed(String what, SQLException e) {
        String index = uniqueIndex(e);
        if (index != null) return new StoreException.Conflict(index.contains("email_key") ? "email" : "username");
        return new StoreException(NAMES.get(engine) + " at " + where + " could not " + what + ": " + describe(e));
    }

    /** The index a unique violation names (decided by its name alone), or null for other errors. */
    private String uniqueIndex(SQLException e) {
        switch (engine) {
            case "postgres":
                if (!"23505".equals(e.getSQLState())) return null;
                if (e instanceof org.postgresql.util.PSQLException p && p.getServerErrorMessage() != null) {
                    String c = p.getServerErrorMessage().getConstraint();
                    return c == null ? "" : c;
                }
                return "";
            case "mysql":
                if (e.getErrorCode() != 1062) return null;
                Matcher m = MYSQL_KEY.matcher(e.getMessage() == null ? "" : e.getMessage());
                String key = "";
                while (m.find()) key = m.group(1);
                return key;
            default: {
                // "[SQLITE_CONSTRAINT_UNIQUE] A UNIQUE constraint failed (UNIQUE constraint failed: users.email_key)"
                String msg = e.getMessage() == null ? "" : e.getMessage();
                int at = msg.lastIndexOf("UNIQUE constraint failed:");
                return at < 0 ? null : msg.substring(at);
            }
        }
    }

    private static StoredUser row(ResultSet r) throws SQLException {
        return new StoredUser(r.getLong(1), r.getString(2), r.getString(3), r.getString(4), r.getString(5), r.getLong(6), r.getLong(7));
    }

    private static void bind(PreparedStatement ps, List<Object> params) throws SQLException {
        for (int i = 0; i < params.size(); i++) {
            Object v = params.get(i);
            if (v instanceof Long l) ps.setLong(i + 1, l);
            else if (v instanceof Integer n) ps.setLong(i + 1, n);
            else ps.setString(i + 1, (String) v);
        }
    }

    @Override
    public long insert(NewRow u) throws StoreException {
        String sql = "INSERT INTO users (username, username_key, email, email_key, full_name, password, created_at, updated_at) "
                + "VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
        List<Object> params = List.of(u.username(), u.usernameKey(), u.email(), u.emailKey(), u.fullName(), u.password(), u.now(), u.now());
        try (Connection c = pool.getConnection()) {
            if (engine.equals("mysql")) {
                try (PreparedStatement ps = c.prepareStatement(sql, Statement.RETURN_GENERATED_KEYS)) {
                    bind(ps, params);
                    ps.executeUpdate();
                    try (ResultSet keys = ps.getGeneratedKeys()) {
                        if (!keys.next()) throw new StoreException(NAMES.get(engine) + " returned no id for the insert");
                        return keys.getLong(1);
                    }
                }
            }
            try (PreparedStatement ps = c.prepareStatement(sql + " RETURNING id")) {
                bind(ps, params);
                try (ResultSet r = ps.executeQuery()) {
                    if (!r.next()) throw new StoreException(NAMES.get(engine) + " returned no id for the insert");
                    return r.getLong(1);
                }
            }
        } catch (SQLException e) {
            throw failed("insert", e);
        }
    }

    @Override
    public StoredUser get(long id) throws StoreException {
        try (Connection c = pool.getConnection(); PreparedStatement ps = c.prepareStatement("SELECT " + COLUMNS + " FROM users WHERE id = ?")) {
            ps.setLong(1, id);
            try (ResultSet r = ps.executeQuery()) {
                return r.next() ? row(r) : null;
            }
        } catch (SQLException e) {
            throw failed("read", e);
        }
    }

    /** {@code %lower%} with {@code % _ !} escaped by {@code !}. */
    static String likePattern(String lower) {
        return "%" + lower.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%";
    }

    @Override
    public Page search(Search s, int limit, long offset) throws StoreException {
        String filter = "";
        List<Object> binds = new ArrayList<>();
        if (s.lower() != null) {
            String pattern = likePattern(s.lower());
            if (s.emailIndex() == null) {
                filter = " WHERE username_key LIKE ? ESCAPE '!' OR email_key LIKE ? ESCAPE '!'";
                binds.add(pattern);
                binds.add(pattern);
            } else {
                filter = " WHERE username_key LIKE ? ESCAPE '!' OR email_key = ?";
                binds.add(pattern);
                binds.add(s.emailIndex());
            }
        }
        try (Connection c = pool.getConnection()) {
            List<StoredUser> rows = new ArrayList<>();
            try (PreparedStatement ps = c.prepareStatement("SELECT " + COLUMNS + " FROM users" + filter + " ORDER BY id LIMIT ? OFFSET ?")) {
                List<Object> all = new ArrayList<>(binds);
                all.add((long) limit);
                all.add(offset);
                bind(ps, all);
                try (ResultSet r = ps.executeQuery()) {
                    while (r.next()) rows.add(row(r));
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT COUNT(*) FROM users" + filter)) {
                bind(ps, binds);
                try (ResultSet r = ps.executeQuery()) {
                    r.next();
                    return new Page(rows, r.getLong(1));
                }
            }
        } catch (SQLException e) {
            throw failed("search", e);
        }
    }

    @Override
    public StoredUser update(long id, Changes ch) throws StoreException {
        List<String> sets = new ArrayList<>();
        List<Object> binds = new ArrayList<>();
        if (ch.username() != null) {
            sets.add("username = ?");
            binds.add(ch.username());
            sets.add("username_key = ?");
            binds.add(ch.usernameKey());
        }
        if (ch.email() != null) {
            sets.add("email = ?");
            binds.add(ch.email());
            sets.add("email_key = ?");
            binds.add(ch.emailKey());
        }
        if (ch.fullName() != null) {
            sets.add("full_name = ?");
            binds.add(ch.fullName());
        }
        if (ch.password() != null) {
            sets.add("password = ?");
            binds.add(ch.password());
        }
        sets.add("updated_at = ?");
        binds.add(ch.now());
        binds.add(id);
        int changed;
        try (Connection c = pool.getConnection(); PreparedStatement ps = c.prepareStatement("UPDATE users SET " + String.join(", ", sets) + " WHERE id = ?")) {
            bind(ps, binds);
            changed = ps.executeUpdate();
        } catch (SQLException e) {
            throw failed("update", e);
        }
        // MySQL counts only changed rows; "missing" and "unchanged" are told apart by reading.
        if (changed == 0 && !engine.equals("mysql")) return null;
        return get(id);
    }

    @Override
    public boolean delete(long id) throws StoreException {
        try (Connection c = pool.getConnection(); PreparedStatement ps = c.prepareStatement("DELETE FROM users WHERE id = ?")) {
            ps.setLong(1, id);
            return ps.executeUpdate() > 0;
        } catch (SQLException e) {
            throw failed("delete", e);
        }
    }

    @Override
    public Size stats() throws StoreException {
        try (Connection c = pool.getConnection(); Statement s = c.createStatement()) {
            long size, rows;
            try (ResultSet r = s.executeQuery(SIZE_SQL.get(engine))) {
                r.next();
                size = r.getLong(1);
            }
            try (ResultSet r = s.executeQuery("SELECT COUNT(*) FROM users")) {
                r.next();
                rows = r.getLong(1);
            }
            return new Size(engine, size, rows);
        } catch (SQLException e) {
            throw failed("read its size", e);
        }
    }

    @Override
    public void close() { pool.close(); }
}
