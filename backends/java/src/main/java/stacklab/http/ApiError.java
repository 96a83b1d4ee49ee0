package stacklab.http;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The API's one error type (CONTRACT.md §5): a status, a snake_case code, a message for people
 * and, where an input is at fault, the field. {@link #body()} renders the JSON error body; the
 * handler renders every ApiError and turns anything else into a 500 whose detail is logged only.
 */
public final class ApiError extends RuntimeException {
    private final int status;
    private final String code;
    private final String field;
    private final Map<String, String> headers;
    private final String detail;

    public ApiError(int status, String code, String message, String field, Map<String, String> headers, String detail) {
        super(message, null, false, false);
        this.status = status;
        this.code = code;
        this.field = field;
        this.headers = headers == null ? Map.of() : headers;
        this.detail = detail;
    }

    public ApiError(int status, String code, String message, String field) {
        this(status, code, message, field, null, null);
    }

    public int status() { return status; }
    public String code() { return code; }
    public String field() { return field; }
    public Map<String, String> headers() { return headers; }
    /** What went wrong inside, for the log only. */
    public String detail() { return detail == null ? getMessage() : detail; }

    public Map<String, Object> body() {
        Map<String, Object> error = new LinkedHashMap<>();
        error.put("code", code);
        error.put("message", getMessage());
        if (field != null) error.put("field", field);
        return Map.of("error", error);
    }

    public static ApiError invalid(String field, String message) { return new ApiError(400, "invalid", message, field); }
    public static ApiError badRequest(String message) { return new ApiError(400, "bad_request", message, null); }
    public static ApiError badRequest(String message, String field) { return new ApiError(400, "bad_request", message, field); }
    public static ApiError unsupportedMediaType() {
        return new ApiError(415, "unsupported_media_type", "send the body as JSON with `content-type: application/json`", null);
    }
    public static ApiError notFound(long id) { return new ApiError(404, "not_found", "no user with id " + id + "; check the id", null); }
    public static ApiError noRoute(String path) { return new ApiError(404, "not_found", "nothing at " + path, null); }
    public static ApiError methodNotAllowed() { return new ApiError(405, "method_not_allowed", "method not allowed", null); }
    public static ApiError conflict(String field, String value) {
        return new ApiError(409, "conflict", field + " `" + value + "` is already taken; choose another", field);
    }
    public static ApiError refused(String why) { return new ApiError(409, "refused", why, null); }
    public static ApiError sessionMissing() {
        return new ApiError(401, "session_missing", "this request needs the x-stacklab-session header the proxy adds", null);
    }
    public static ApiError sessionExpired() {
        return new ApiError(410, "session_expired", "your session has expired; start a new one with POST /api/sessions", null);
    }
    public static ApiError unauthorized() {
        return new ApiError(401, "unauthorized", "send the runtime credential as `Authorization: Bearer <token>`", null,
                Map.of("WWW-Authenticate", "Bearer"), null);
    }
    public static ApiError forbidden() { return new ApiError(403, "forbidden", "the credential is not valid for this instance", null); }
    public static ApiError tooLarge(long limit) { return new ApiError(413, "body_too_large", "the body is larger than " + limit + " bytes", null); }
    public static ApiError unavailable(String engine, String reason) {
        return new ApiError(503, "unavailable", engine + " is unavailable: " + reason + "; retry shortly, and if it stays down "
                + "re-provision the session (POST /api/session/reprovision) or start a new one", null);
    }
    public static ApiError busy(String message) { return new ApiError(503, "busy", message, null, Map.of("Retry-After", "1"), null); }
    public static ApiError benchmarkRunning() {
        return new ApiError(409, "benchmark_running", "this session is running a benchmark already; wait for its result", null);
    }
    public static ApiError internal(String detail) {
        return new ApiError(500, "internal", "the backend failed; retry, and report a bug if it persists", null, null, detail);
    }
}
