package stacklab;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.eclipse.jetty.server.HttpConfiguration;
import org.eclipse.jetty.server.HttpConnectionFactory;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.server.handler.StatisticsHandler;
import org.eclipse.jetty.util.thread.QueuedThreadPool;
import stacklab.config.Config;
import stacklab.http.App;
import stacklab.http.JsonErrorHandler;
import stacklab.security.Guards;
import stacklab.sessions.Control;
import stacklab.sessions.Sessions;

/**
 * One instance of the Java runtime (CONTRACT.md §1): arguments, the credential on stdin, the
 * Jetty server, shutdown. The first stdout line says where it listens; stdin reaching EOF
 * (control went away), SIGTERM or SIGINT stop it: the connector stops accepting, requests in
 * flight get up to {@link #DRAIN_MS} to finish (Jetty's graceful stop), the sessions'
 * connections close, and the process exits 0.
 */
public final class Main {
    static final long DRAIN_MS = 10_000;
    /** Worker threads: requests block on databases and hashes, so more than cores. */
    static final int MAX_THREADS = 64, MIN_THREADS = 4;
    /** Longer than any proxy's idle upstream timeout, so the proxy closes first. */
    static final long IDLE_TIMEOUT_MS = 75_000;
    static final int MAX_HEADER_BYTES = 16 * 1024;

    private Main() {}

    record Args(String addr, String controlUrl, String config, boolean tokenStdin, boolean check, boolean help) {}

    static Args parse(String[] argv) {
        String addr = null, control = null, config = null;
        boolean token = false, check = false, help = false;
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i], value = null;
            int eq = a.indexOf('=');
            if (a.startsWith("--") && eq > 0) {
                value = a.substring(eq + 1);
                a = a.substring(0, eq);
            }
            switch (a) {
                case "--token-stdin" -> token = true;
                case "--check" -> check = true;
                case "--help", "-h" -> help = true;
                case "--addr", "--control-url", "--config" -> {
                    if (value == null) {
                        if (i + 1 >= argv.length) throw new IllegalArgumentException(a + " needs a value");
                        value = argv[++i];
                    }
                    if (a.equals("--addr")) addr = value;
                    else if (a.equals("--control-url")) control = value;
                    else config = value;
                }
                default -> throw new IllegalArgumentException("unknown argument `" + argv[i] + "`");
            }
        }
        return new Args(addr, control, config, token, check, help);
    }

    /** Loads every library an instance uses, so a missing jar fails here and not mid-request. */
    static int check() {
        String[] classes = {"org.eclipse.jetty.server.Server", "com.zaxxer.hikari.HikariDataSource", "org.postgresql.Driver",
            "org.mariadb.jdbc.Driver", "org.sqlite.JDBC", "net.spy.memcached.MemcachedClient",
            "org.bouncycastle.crypto.generators.Argon2BytesGenerator", "com.fasterxml.jackson.databind.ObjectMapper", "org.slf4j.LoggerFactory"};
        for (String c : classes) {
            try {
                Class.forName(c);
            } catch (ClassNotFoundException | LinkageError e) {
                System.err.println("the Java runtime's library " + c + " is missing or does not load; run backends/java/setup.sh");
                return 1;
            }
        }
        try (var conn = java.sql.DriverManager.getConnection("jdbc:sqlite::memory:")) {
            conn.createStatement().execute("SELECT 1");
        } catch (Exception | LinkageError e) {
            System.err.println("sqlite-jdbc's native library does not load (" + e.getMessage() + "); run backends/java/setup.sh");
            return 1;
        }
        System.out.println("ok");
        return 0;
    }

    /** The first line of stdin, trailing white space trimmed; null at EOF before a newline with nothing. */
    static String readLine(InputStream in) throws IOException {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        for (int c = in.read(); c != '\n'; c = in.read()) {
            if (c < 0) break;
            b.write(c);
        }
        return b.toString(StandardCharsets.UTF_8).stripTrailing().strip();
    }

    public static void main(String[] argv) throws Exception {
        Args args;
        try {
            args = parse(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("stacklab-java: " + e.getMessage());
            System.exit(2);
            return;
        }
        if (args.help) {
            System.out.println("usage: stacklab-java --addr HOST:PORT --control-url URL --token-stdin [--config FILE] | --check");
            return;
        }
        if (args.check) System.exit(check());

        Config config;
        try {
            config = Config.load(args.config == null ? null : Path.of(args.config));
            if (args.addr != null) {
                InetSocketAddress a = Config.parseAddr(args.addr);
                if (a == null) throw new Config.ConfigException(java.util.List.of("--addr: `" + args.addr + "` is not `host:port`"));
                config = config.withAddr(a);
            }
            if (args.controlUrl != null) config = config.withControlUrl(args.controlUrl);
        } catch (Config.ConfigException e) {
            e.problems.forEach(System.err::println);
            System.exit(1);
            return;
        }
        if (!args.tokenStdin) {
            System.err.println("stacklab-java takes its credential only from stdin: pass --token-stdin");
            System.exit(1);
        }

        CountDownLatch stop = new CountDownLatch(1);
        String[] why = {null};
        // Handlers before the first line: a parent may signal as soon as it has read it.
        for (String sig : new String[] {"TERM", "INT"}) {
            sun.misc.Signal.handle(new sun.misc.Signal(sig), s -> {
                why[0] = "SIG" + sig;
                stop.countDown();
            });
        }
        String credential = readLine(System.in);
        if (credential.isEmpty()) {
            System.err.println("--token-stdin: no token on the first line of stdin");
            System.exit(1);
        }
        Thread stdin = new Thread(() -> {
            byte[] sink = new byte[4096];
            try {
                while (System.in.read(sink) >= 0) {
                    // read and dropped
                }
            } catch (IOException ignored) {
                // a broken pipe is EOF too
            }
            if (why[0] == null) why[0] = "stdin closed";
            stop.countDown();
        }, "stdin-eof");
        stdin.setDaemon(true);
        stdin.start();

        Guards guards = new Guards(config.limits());
        Sessions sessions = new Sessions(new Control(config.controlUrl(), credential), config, guards);
        App app = new App(config, sessions, guards, credential);

        QueuedThreadPool pool = new QueuedThreadPool(MAX_THREADS, MIN_THREADS, 60_000);
        pool.setName("http");
        Server server = new Server(pool);
        HttpConfiguration http = new HttpConfiguration();
        http.setSendServerVersion(false);
        http.setSendXPoweredBy(false);
        http.setRequestHeaderSize(MAX_HEADER_BYTES);
        ServerConnector connector = new ServerConnector(server, 1, 1, new HttpConnectionFactory(http));
        connector.setHost(config.addr().getAddress().getHostAddress());
        connector.setPort(config.addr().getPort());
        connector.setIdleTimeout(IDLE_TIMEOUT_MS);
        server.addConnector(connector);
        StatisticsHandler stats = new StatisticsHandler();
        stats.setHandler(app);
        server.setHandler(stats);
        server.setErrorHandler(new JsonErrorHandler());
        server.setStopTimeout(DRAIN_MS);
        server.setStopAtShutdown(false);
        try {
            server.start();
        } catch (IOException e) {
            System.err.println("cannot bind the backend on " + args.addr + ": " + e.getMessage());
            System.exit(1);
        }

        long interval = Math.min(30_000, Math.max(50, config.sessionIdleMs() / 4));
        ScheduledExecutorService sweeper = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "session-sweep");
            t.setDaemon(true);
            return t;
        });
        sweeper.scheduleWithFixedDelay(() -> {
            try {
                sessions.sweep();
            } catch (RuntimeException e) {
                System.err.println("session sweep failed: " + e);
            }
        }, interval, interval, TimeUnit.MILLISECONDS);

        String host = connector.getHost().contains(":") ? "[" + connector.getHost() + "]" : connector.getHost();
        System.out.print("stacklab backend on http://" + host + ":" + connector.getLocalPort() + "\n");
        System.out.flush();

        stop.await();
        System.err.println(why[0] + ": stopping");
        app.stopping();
        sweeper.shutdownNow();
        try {
            server.stop(); // graceful: in-flight requests get DRAIN_MS
        } catch (Exception e) {
            System.err.println("requests still running after " + DRAIN_MS / 1000 + " s: stopping anyway (" + e.getMessage() + ")");
        }
        sessions.closeAll();
        System.out.flush();
        System.exit(0);
    }
}
