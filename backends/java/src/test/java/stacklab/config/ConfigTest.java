package stacklab.config;

import static org.junit.jupiter.api.Assertions.*;

import java.util.Map;
import org.junit.jupiter.api.Test;

/** The [backend] section: defaults, every problem named by its key, TOML as stacklab writes it. */
class ConfigTest {
    @Test
    void defaultsAreTheContracts() throws Exception {
        Config c = Config.fromSection(Map.of());
        assertEquals(256, c.maxSessions());
        assertEquals(4, c.dbConnectionsPerSession());
        assertEquals(65536, c.limits().maxBodyBytes());
        assertEquals(10, c.limits().bcryptCost());
        assertEquals("http://127.0.0.1:9000", c.controlUrl());
    }

    @Test
    void everyProblemIsNamedByItsKey() {
        var e = assertThrows(Config.ConfigException.class, () -> Config.fromSection(Map.of("bcrypt_cost", 3L, "control_url", "https://x",
                "graphql_max_depth", 0L)));
        String all = String.join("\n", e.problems);
        assertTrue(all.contains("backend.bcrypt_cost"), all);
        assertTrue(all.contains("backend.control_url"), all);
        assertTrue(all.contains("backend.graphql_max_depth"), all);
        var u = assertThrows(Config.ConfigException.class, () -> Config.fromSection(Map.of("nope", 1L)));
        assertTrue(u.problems.get(0).contains("nope"));
    }

    @Test
    void readsTheBackendTableOnly() throws Exception {
        String text = "[proxy]\nmax_sessions = \"x\" # not ours\n\n[backend]\nmax_sessions = 3 # comment\naddr = '127.0.0.1:0'\n"
                + "control_url = \"http://127.0.0.1:1/\"\n[admin]\ntoken = \"t#x\"\n";
        Map<String, Object> t = Toml.table(text, "backend");
        assertEquals(Map.of("max_sessions", 3L, "addr", "127.0.0.1:0", "control_url", "http://127.0.0.1:1/"), t);
        assertEquals(3, Config.fromSection(t).maxSessions());
    }
}
