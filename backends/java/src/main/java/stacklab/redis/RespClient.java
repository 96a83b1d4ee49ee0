package stacklab.redis;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.Closeable;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A small Redis client speaking RESP2 over one connection: commands are sent as arrays of bulk
 * strings, replies read back as Java values — simple strings as {@link String}, errors as
 * {@link ErrorReply}, integers as {@link Long}, bulk strings as {@code byte[]} (null when nil),
 * arrays as {@link List}. {@link #pipeline} sends many commands and reads their replies in one
 * round trip, each reply as it came (an error reply does not hide the others).
 *
 * <p>Written by hand: Debian packages no Redis client for Java (no Jedis, no Lettuce). One
 * connection per session, its commands serialized by the client's monitor; connect and every
 * read time out after the given timeout; a broken connection is dropped and the next command
 * connects again (with AUTH and SELECT from the URL).
 */
public final class RespClient implements Closeable {
    /** An error reply from the server ({@code -ERR …}). */
    public record ErrorReply(String message) {}

    /** The connection failed, timed out, or the server said something that is not RESP. */
    public static final class RedisException extends IOException {
        public RedisException(String message) { super(message); }
    }

    private final String host;
    private final int port;
    private final String user, password;
    private final int db;
    private final int timeoutMs;
    private Socket socket;
    private InputStream in;
    private OutputStream out;

    private RespClient(String host, int port, String user, String password, int db, int timeoutMs) {
        this.host = host;
        this.port = port;
        this.user = user;
        this.password = password;
        this.db = db;
        this.timeoutMs = timeoutMs;
    }

    /** {@code redis://[user:password@]host[:port][/db]}; the URL is never put in a message. */
    public static RespClient forUrl(String url, int timeoutMs) throws RedisException {
        URI u;
        try {
            u = new URI(url);
        } catch (URISyntaxException e) {
            throw new RedisException("the Redis URL is not valid; expected redis://[user:password@]host:port[/db]");
        }
        if (!"redis".equals(u.getScheme()) || u.getHost() == null) {
            throw new RedisException("the Redis URL is not valid; expected redis://[user:password@]host:port[/db]");
        }
        String user = null, password = null;
        String info = u.getRawUserInfo();
        if (info != null) {
            int colon = info.indexOf(':');
            user = decode(colon < 0 ? info : info.substring(0, colon));
            password = colon < 0 ? null : decode(info.substring(colon + 1));
            if (user.isEmpty()) user = null;
        }
        int db = 0;
        String path = u.getPath() == null ? "" : u.getPath().replaceAll("^/+", "");
        if (!path.isEmpty()) {
            if (!path.matches("[0-9]{1,4}")) throw new RedisException("the Redis URL's database is not a number");
            db = Integer.parseInt(path);
        }
        String host = u.getHost().replaceAll("^\\[|\\]$", "");
        return new RespClient(host, u.getPort() < 0 ? 6379 : u.getPort(), user, password, db, timeoutMs);
    }

    private static String decode(String s) { return URLDecoder.decode(s.replace("+", "%2B"), StandardCharsets.UTF_8); }

    public String endpoint() { return host + ":" + port; }

    private void connect() throws IOException {
        Socket s = new Socket();
        try {
            s.connect(new InetSocketAddress(host, port), timeoutMs);
            s.setSoTimeout(timeoutMs);
            s.setTcpNoDelay(true);
            socket = s;
            in = new BufferedInputStream(s.getInputStream());
            out = new BufferedOutputStream(s.getOutputStream());
            if (password != null) {
                Object r = exchange(List.of(user == null ? List.of("AUTH", password) : List.of("AUTH", user, password))).get(0);
                if (r instanceof ErrorReply e) throw new RedisException("AUTH failed: " + e.message());
            }
            if (db != 0) {
                Object r = exchange(List.of(List.of("SELECT", Integer.toString(db)))).get(0);
                if (r instanceof ErrorReply e) throw new RedisException("SELECT failed: " + e.message());
            }
        } catch (IOException e) {
            drop();
            throw e;
        }
    }

    /** One command; its reply (an {@link ErrorReply} is returned, not thrown). */
    public synchronized Object command(String... args) throws RedisException {
        return pipeline(List.of(List.of(args))).get(0);
    }

    public synchronized List<Object> pipeline(List<List<String>> commands) throws RedisException {
        if (commands.isEmpty()) return List.of();
        try {
            if (socket == null) connect();
            return exchange(commands);
        } catch (SocketTimeoutException e) {
            drop();
            throw new RedisException("Redis at " + endpoint() + " did not answer within " + timeoutMs + " ms");
        } catch (RedisException e) {
            drop();
            throw e;
        } catch (IOException e) {
            drop();
            throw new RedisException("Redis at " + endpoint() + ": " + e.getMessage());
        }
    }

    private List<Object> exchange(List<List<String>> commands) throws IOException {
        for (List<String> c : commands) {
            write(out, c);
        }
        out.flush();
        List<Object> replies = new ArrayList<>(commands.size());
        for (int i = 0; i < commands.size(); i++) replies.add(read(in));
        return replies;
    }

    static void write(OutputStream out, List<String> args) throws IOException {
        out.write(("*" + args.size() + "\r\n").getBytes(StandardCharsets.US_ASCII));
        for (String a : args) {
            byte[] b = a.getBytes(StandardCharsets.UTF_8);
            out.write(("$" + b.length + "\r\n").getBytes(StandardCharsets.US_ASCII));
            out.write(b);
            out.write('\r');
            out.write('\n');
        }
    }

    static Object read(InputStream in) throws IOException {
        int type = in.read();
        if (type < 0) throw new EOFException("Redis closed the connection");
        String line = line(in);
        switch (type) {
            case '+':
                return line;
            case '-':
                return new ErrorReply(line);
            case ':':
                return Long.parseLong(line);
            case '$': {
                int n = Integer.parseInt(line);
                if (n < 0) return null;
                byte[] b = in.readNBytes(n);
                if (b.length != n || in.read() != '\r' || in.read() != '\n') throw new RedisException("a bulk reply was cut short");
                return b;
            }
            case '*': {
                int n = Integer.parseInt(line);
                if (n < 0) return null;
                List<Object> items = new ArrayList<>(n);
                for (int i = 0; i < n; i++) items.add(read(in));
                return items;
            }
            default:
                throw new RedisException("not a RESP reply (type byte " + type + ")");
        }
    }

    private static String line(InputStream in) throws IOException {
        ByteArrayOutputStream b = new ByteArrayOutputStream(16);
        while (true) {
            int c = in.read();
            if (c < 0) throw new EOFException("Redis closed the connection");
            if (c == '\r') {
                if (in.read() != '\n') throw new RedisException("a reply line does not end with CRLF");
                return b.toString(StandardCharsets.UTF_8);
            }
            b.write(c);
        }
    }

    /** A reply as text: bulk strings decoded as lossy UTF-8, simple strings as they are. */
    public static String text(Object reply) {
        if (reply instanceof byte[] b) return new String(b, StandardCharsets.UTF_8);
        if (reply instanceof String s) return s;
        return null;
    }

    private void drop() {
        if (socket != null) {
            try {
                socket.close();
            } catch (IOException ignored) {
                // gone either way
            }
        }
        socket = null;
        in = null;
        out = null;
    }

    @Override
    public synchronized void close() { drop(); }
}
