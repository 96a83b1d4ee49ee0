package stacklab.http;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import org.eclipse.jetty.server.Request;
import org.eclipse.jetty.server.handler.AbstractHandler;
import stacklab.cache.Cache;
import stacklab.cache.CacheException;
import stacklab.config.Config;
import stacklab.graphql.GraphQL;
import stacklab.security.Guards;
import stacklab.sessions.Sessions;
import stacklab.users.Analysis;
import stacklab.users.Session;
import stacklab.users.Trace;

/**
 * The HTTP API (CONTRACT.md §4–§9) as one Jetty handler: the contract's routing (leading and
 * trailing slashes trimmed, which wrong methods are 405 and which 404, /api/* and POST /graphql
 * resolving the session before their route is known), the timing headers every response
 * carries, and one place that renders every error as the API's JSON body. Jetty's own errors
 * (bad requests its parser refuses) are JSON too, through {@link JsonErrorHandler}.
 */
public final class App extends AbstractHandler {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final List<String> ROOTS = List.of("api", "graphql", "healthz", "internal");
    private static final List<String> CREATE = List.of("username", "email", "password", "full_name");
    private static final List<String> VERIFY = List.of("password");
    private static final List<String> POLICY = List.of("policy");
    private static final List<String> BENCH = List.of("reads", "writes");
    private static final List<String> GRAPHQL = List.of("query", "operationName", "variables", "extensions");

    private final Config config;
    private final Sessions sessions;
    private final Guards guards;
    private final byte[] credential;
    private volatile boolean stopping;

    public App(Config config, Sessions sessions, Guards guards, String credential) {
        this.config = config;
        this.sessions = sessions;
        this.guards = guards;
        this.credential = credential.getBytes(StandardCharsets.UTF_8);
    }

    public void stopping() { stopping = true; }

    /** What a route answers: JSON (a Map) or a page (bytes with its content type). */
    record Answer(int status, Object json, byte[] page, String contentType, Map<String, String> headers) {
        static Answer json(int status, Object body) { return new Answer(status, body, null, null, Map.of()); }
    }

    @Override
    public void handle(String target, Request base, HttpServletRequest req, HttpServletResponse resp) throws IOException {
        base.setHandled(true);
        long start = System.nanoTime();
        Trace trace = new Trace();
        Answer a;
        try {
            a = route(req, trace);
        } catch (ApiError e) {
            a = error(e, req);
        } catch (RuntimeException | IOException e) {
            ApiError err = ApiError.internal(e.toString());
            System.err.println("request " + requestId(req) + " failed: " + req.getMethod() + " " + req.getRequestURI());
            e.printStackTrace();
            a = error(err, req);
        }
        send(resp, a, trace, start);
    }

    private static String requestId(HttpServletRequest req) {
        String id = req.getHeader("x-request-id");
        return id == null ? "-" : id;
    }

    private Answer error(ApiError e, HttpServletRequest req) {
        if (e.status() >= 500 && !e.code().equals("busy")) {
            // The proxy's request id ties this line to the inspector's capture.
            System.err.println("request " + requestId(req) + " failed: " + e.code() + " " + e.detail());
        }
        return new Answer(e.status(), e.body(), null, null, e.headers());
    }

    private void send(HttpServletResponse resp, Answer a, Trace trace, long start) throws IOException {
        byte[] body = a.page != null ? a.page : JSON.writeValueAsBytes(a.json);
        resp.setStatus(a.status);
        if (a.page != null && resp instanceof org.eclipse.jetty.server.Response r) {
            // As written: Jetty's setContentType would shorten it to `text/html;charset=utf-8`.
            r.getHttpFields().put("Content-Type", a.contentType);
        } else {
            resp.setHeader("Content-Type", a.page != null ? a.contentType : "application/json");
        }
        a.headers.forEach(resp::setHeader);
        double backend = (System.nanoTime() - start) / 1e6;
        resp.setHeader("Server-Timing", serverTiming(backend, trace.cacheMs(), trace.dbMs()));
        if (trace.outcome() != null) resp.setHeader("x-stacklab-cache", trace.outcome());
        if (stopping) resp.setHeader("Connection", "close");
        resp.setContentLength(body.length);
        resp.getOutputStream().write(body);
    }

    static String serverTiming(double backend, double cache, double db) {
        return String.format(Locale.ROOT, "backend;dur=%.3f, cache;dur=%.3f, db;dur=%.3f", backend, cache, db);
    }

    private static String sessionCode(HttpServletRequest req) {
        String code = req.getHeader("x-stacklab-session");
        if (code == null) throw ApiError.sessionMissing();
        for (int i = 0; i < code.length(); i++) {
            char c = code.charAt(i);
            if (c != '\t' && (c < 0x20 || c > 0x7e)) throw ApiError.sessionMissing();
        }
        if (!code.matches("[A-Za-z0-9]{16,64}")) throw ApiError.sessionExpired();
        return code;
    }

    private static boolean methodNotAllowedHere(String[] s) {
        String j = String.join("/", s);
        return j.equals("api/users") || j.equals("api/cache") || j.equals("graphql") || (s.length == 3 && s[0].equals("api") && s[1].equals("users"));
    }

    private Answer route(HttpServletRequest req, Trace trace) throws IOException {
        String raw = req.getRequestURI() == null ? "/" : req.getRequestURI();
        String trimmed = raw.replaceAll("^/+|/+$", "");
        String path = "/" + trimmed;
        String[] s = trimmed.split("/", -1);
        String method = req.getMethod();
        if (!ROOTS.contains(s[0])) throw ApiError.noRoute(path);
        boolean data = s[0].equals("api") || s[0].equals("graphql");
        Session session = data ? sessions.get(sessionCode(req)) : null;
        long maxBody = config.limits().maxBodyBytes();
        switch (s[0]) {
            case "healthz" -> {
                if (s.length == 1 && method.equals("GET")) {
                    Map<String, Object> h = new LinkedHashMap<>();
                    h.put("status", "ok");
                    h.put("limits", guards.snapshot());
                    return Answer.json(200, h);
                }
            }
            case "internal" -> {
                if (s.length == 3 && s[1].equals("sessions") && method.equals("DELETE")) return forget(req, Query.decode(s[2]));
            }
            case "graphql" -> {
                if (s.length == 1) {
                    // POST only: no GraphiQL page (it loaded its scripts from a public CDN).
                    if (method.equals("POST")) return graphql(req, session, trace);
                    throw ApiError.methodNotAllowed();
                }
            }
            default -> {
                if (s.length >= 2 && s[1].equals("users")) return users(req, s, session, trace, maxBody);
                if (s.length >= 2 && s[1].equals("cache")) {
                    if (s.length == 2) {
                        if (method.equals("GET")) return Answer.json(200, cacheView(session.cache()));
                        if (method.equals("DELETE")) {
                            cacheStep(() -> session.cache().flush());
                            return Answer.json(200, cacheView(session.cache()));
                        }
                        throw ApiError.methodNotAllowed();
                    }
                    if (s.length == 3 && s[2].equals("policy") && method.equals("PUT")) {
                        String policy = Body.read(req, maxBody).check(POLICY, true).str("policy", true);
                        // One canonical name everywhere: " ALLKEYS-LFU " is applied, shown and reported as "allkeys-lfu".
                        String canonical = policy.strip().toLowerCase(Locale.ROOT);
                        cacheStep(() -> session.cache().setPolicy(canonical));
                        sessions.control().cachePolicyChanged(session.code(), canonical);
                        return Answer.json(200, cacheView(session.cache()));
                    }
                }
                if (s.length >= 2 && s[1].equals("analysis")) {
                    if (s.length == 2 && method.equals("GET")) return Answer.json(200, Analysis.overview(session));
                    if (s.length == 3 && s[2].equals("benchmark") && method.equals("POST")) {
                        Body.Obj b = Body.read(req, maxBody).check(BENCH, true);
                        Long reads = b.u32("reads"), writes = b.u32("writes");
                        return Answer.json(200, Analysis.benchmark(session, config.limits(), guards,
                                reads == null ? 200 : reads, writes == null ? 200 : writes));
                    }
                }
            }
        }
        throw methodNotAllowedHere(s) && data ? ApiError.methodNotAllowed() : ApiError.noRoute(path);
    }

    private Answer forget(HttpServletRequest req, String code) {
        String auth = req.getHeader("Authorization");
        if (auth == null || !auth.startsWith("Bearer ") || auth.length() == "Bearer ".length()) throw ApiError.unauthorized();
        byte[] presented = auth.substring("Bearer ".length()).getBytes(StandardCharsets.UTF_8);
        // Constant time; an empty credential matches nothing.
        if (credential.length == 0 || !MessageDigest.isEqual(presented, credential)) throw ApiError.forbidden();
        sessions.close(code);
        return Answer.json(200, Map.of("closed", code));
    }

    private static long userId(String segment) {
        String message = "a user id is a positive whole number";
        long id = Query.whole(Query.decode(segment), "id", message);
        if (id <= 0) throw ApiError.invalid("id", message);
        return id;
    }

    private Answer users(HttpServletRequest req, String[] s, Session session, Trace trace, long maxBody) throws IOException {
        String method = req.getMethod();
        if (s.length == 2) {
            if (method.equals("POST")) {
                Body.Obj b = Body.read(req, maxBody).check(CREATE, true);
                String username = b.str("username", true), email = b.str("email", true), password = b.str("password", true),
                        fullName = b.str("full_name", false);
                return Answer.json(201, session.create(username, email, password, fullName, trace));
            }
            if (method.equals("GET")) {
                Map<String, String> q = Query.parse(req.getQueryString());
                Long limit = q.containsKey("limit") ? Query.whole(q.get("limit"), "limit", "limit must be a whole number") : null;
                Long offset = q.containsKey("offset") ? Query.whole(q.get("offset"), "offset", "offset must be a whole number") : null;
                return Answer.json(200, session.list(q.get("q"), limit, offset, trace));
            }
            throw ApiError.methodNotAllowed();
        }
        if (s.length == 3) {
            switch (method) {
                case "GET" -> {
                    return Answer.json(200, session.get(userId(s[2]), trace));
                }
                case "PATCH" -> {
                    long id = userId(s[2]);
                    Body.Obj b = Body.read(req, maxBody).check(CREATE, true);
                    Session.Update u = new Session.Update(b.str("username", false), b.str("email", false), b.str("password", false),
                            b.str("full_name", false));
                    return Answer.json(200, session.update(id, u, trace));
                }
                case "DELETE" -> {
                    session.delete(userId(s[2]), trace);
                    return Answer.json(200, Map.of("deleted", true));
                }
                default -> throw ApiError.methodNotAllowed();
            }
        }
        if (s.length == 4 && s[3].equals("verify-password") && method.equals("POST")) {
            long id = userId(s[2]);
            String password = Body.read(req, maxBody).check(VERIFY, true).str("password", true);
            return Answer.json(200, Map.of("ok", session.verifyPassword(id, password, trace)));
        }
        throw ApiError.noRoute("/" + String.join("/", s));
    }

    private Answer graphql(HttpServletRequest req, Session session, Trace trace) throws IOException {
        // Unknown fields are ignored, as async-graphql's request type does.
        Body.Obj b = Body.read(req, config.limits().maxBodyBytes()).check(GRAPHQL, false);
        String query = b.str("query", false);
        String operationName = b.str("operationName", false);
        JsonNode variables = b.object("variables");
        b.object("extensions");
        GraphQL.Answer out = GraphQL.run(config.limits(), guards, query == null ? "" : query, operationName, variables, session, trace);
        if (!out.refused()) return Answer.json(200, out.json());
        String more = out.errors().size() == 1 ? "" : " (and " + (out.errors().size() - 1) + " more)";
        ApiError e = ApiError.invalid("query", "the GraphQL request was refused before it ran: " + out.errors().get(0).message() + more
                + "; fix the query and send it again");
        Map<String, Object> body = new LinkedHashMap<>(out.json());
        body.putAll(e.body());
        return Answer.json(400, body);
    }

    interface CacheCall {
        void run() throws CacheException;
    }

    private static void cacheStep(CacheCall c) {
        try {
            c.run();
        } catch (CacheException e) {
            throw Analysis.fromCache(e);
        }
    }

    private static Map<String, Object> cacheView(Cache c) {
        try {
            List<Cache.Item> items = c.items(Cache.MAX_LISTED_ITEMS);
            Cache.Stats stats = c.stats();
            Cache.Policy p = c.policy();
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("engine", c.engine());
            m.put("policy", p.policy());
            m.put("policies", p.policies());
            m.put("changeable", p.changeable());
            m.put("note", p.note());
            m.put("items", items.stream().map(Cache.Item::json).toList());
            m.put("stats", stats.json());
            return m;
        } catch (CacheException e) {
            throw Analysis.fromCache(e);
        }
    }
}
