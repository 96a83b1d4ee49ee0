package stacklab.http;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import org.eclipse.jetty.http.HttpField;
import org.eclipse.jetty.http.HttpFields;
import org.eclipse.jetty.http.HttpHeader;
import org.eclipse.jetty.server.Request;
import org.eclipse.jetty.server.handler.ErrorHandler;

/**
 * Jetty's own error answers — a request its parser refuses (400, 413, 414, 431, 505) or any
 * error Jetty raises before the API runs — as the API's JSON error body, never Jetty's HTML
 * page, with the Server-Timing header every response carries.
 */
public final class JsonErrorHandler extends ErrorHandler {
    private static final String TIMING = App.serverTiming(0, 0, 0);

    static String code(int status) {
        return switch (status) {
            case 404 -> "not_found";
            case 405 -> "method_not_allowed";
            case 413 -> "body_too_large";
            case 415 -> "unsupported_media_type";
            case 500 -> "internal";
            case 503 -> "unavailable";
            default -> "bad_request";
        };
    }

    static byte[] body(int status, String reason) {
        String message = switch (status) {
            case 431 -> "the request headers are too large";
            case 414 -> "the request URI is too long";
            case 413 -> "the body is too large";
            case 500 -> "the backend failed; retry, and report a bug if it persists";
            default -> "the request could not be read" + (reason == null ? "" : " (" + reason + ")") + "; send it again";
        };
        try {
            return new com.fasterxml.jackson.databind.ObjectMapper().writeValueAsBytes(
                    Map.of("error", Map.of("code", code(status), "message", message)));
        } catch (IOException e) {
            return ("{\"error\":{\"code\":\"" + code(status) + "\",\"message\":\"bad request\"}}").getBytes(StandardCharsets.UTF_8);
        }
    }

    @Override
    public ByteBuffer badMessageError(int status, String reason, HttpFields fields) {
        fields.put(HttpHeader.CONTENT_TYPE, "application/json");
        fields.put(new HttpField("Server-Timing", TIMING));
        return ByteBuffer.wrap(body(status, reason));
    }

    @Override
    public void handle(String target, Request base, HttpServletRequest req, HttpServletResponse resp) throws IOException {
        base.setHandled(true);
        int status = resp.getStatus();
        byte[] b = body(status, null);
        resp.setHeader("Content-Type", "application/json");
        resp.setHeader("Server-Timing", TIMING);
        resp.setContentLength(b.length);
        resp.getOutputStream().write(b);
    }
}
