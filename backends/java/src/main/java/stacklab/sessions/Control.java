package stacklab.sessions;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Map;
import stacklab.http.ApiError;

/**
 * Control's admin API as this instance uses it (CONTRACT.md §3): fetching a session's
 * descriptor and reporting a cache policy change, with the runtime credential as a bearer
 * token. The credential is held here only and never printed.
 */
public final class Control {
    private static final Duration TIMEOUT = Duration.ofSeconds(5);
    private static final ObjectMapper JSON = new ObjectMapper();

    private final String base;
    private final String hostPort;
    private final String credential;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(TIMEOUT).version(HttpClient.Version.HTTP_1_1).build();

    public Control(String base, String credential) {
        this.base = base.replaceAll("/+$", "");
        URI u = URI.create(this.base);
        this.hostPort = u.getHost() + ":" + (u.getPort() < 0 ? 80 : u.getPort());
        this.credential = credential;
    }

    @Override
    public String toString() { return "Control(" + base + ")"; }

    /** The descriptor, or null when control does not know the session (404/410). */
    public Descriptor fetch(String code) {
        HttpResponse<byte[]> r;
        try {
            r = http.send(HttpRequest.newBuilder(URI.create(base + "/admin/stacks/" + code)).timeout(TIMEOUT)
                    .header("Authorization", "Bearer " + credential).GET().build(), HttpResponse.BodyHandlers.ofByteArray());
        } catch (IOException e) {
            throw ApiError.unavailable("control", "cannot reach control at " + hostPort + ": " + e.getClass().getSimpleName());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw ApiError.unavailable("control", "interrupted");
        }
        if (r.statusCode() == 404 || r.statusCode() == 410) return null;
        if (r.statusCode() != 200) throw ApiError.unavailable("control", "control answered " + r.statusCode());
        try {
            JsonNode d = JSON.readTree(r.body());
            return Descriptor.of(d);
        } catch (IOException | IllegalArgumentException e) {
            throw ApiError.unavailable("control", "bad stack descriptor: " + e.getMessage());
        }
    }

    /** Best effort: the session keeps its policy on another instance and after a restart. */
    public void cachePolicyChanged(String code, String policy) {
        try {
            HttpResponse<Void> r = http.send(HttpRequest.newBuilder(URI.create(base + "/admin/stacks/" + code + "/cache-policy"))
                    .timeout(TIMEOUT).header("Authorization", "Bearer " + credential).header("Content-Type", "application/json")
                    .PUT(HttpRequest.BodyPublishers.ofByteArray(JSON.writeValueAsBytes(Map.of("policy", policy)))).build(),
                    HttpResponse.BodyHandlers.discarding());
            if (r.statusCode() >= 300) System.err.println("control did not record the cache policy change: status " + r.statusCode());
        } catch (IOException e) {
            System.err.println("cannot tell control about the cache policy change: " + e.getMessage());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
