package stacklab.security;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.util.HexFormat;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import org.junit.jupiter.api.Test;
import stacklab.config.Limits;
import stacklab.http.ApiError;

/**
 * The five password modes (CONTRACT.md §11) against published vectors and strings other
 * runtimes' libraries wrote (Python's bcrypt and argon2-cffi, as in backends/node's tests).
 */
class PasswordsTest {
    private static Passwords p(String mode) { return new Passwords(mode, 4, ""); }

    @Test
    void bcryptVerifiesTheOpenBsdVectorAndAPythonMadeString() {
        assertTrue(p("bcrypt").verify("U*U", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"));
        assertFalse(p("bcrypt").verify("U*V", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"));
        String python = "$2b$04$mGaDY4b8qwMSg55woJ60FermpIhx0G89lsHb4zYBblZ.0OB8vlOSa";
        assertTrue(p("bcrypt").verify("correct horse battery", python));
        assertFalse(p("bcrypt").verify("correct horse batterx", python));
    }

    @Test
    void bcryptStoresB2WithTheConfiguredCostSalted() {
        String a = p("bcrypt").hash("password123"), b = p("bcrypt").hash("password123");
        assertTrue(a.matches("\\$2b\\$04\\$[./A-Za-z0-9]{53}"), a);
        assertNotEquals(a, b);
        assertTrue(p("bcrypt").verify("password123", a));
        assertFalse(p("bcrypt").verify("password124", a));
        assertTrue(new Passwords("bcrypt", 10, "").hash("password123").startsWith("$2b$10$"));
    }

    @Test
    void bcryptPepperIsBcryptOfTheHmacHexAsPythonWritesIt() {
        String python = "$2b$04$Oce.xtAfpxR3yPpIKALtouMWEJn88rr6jpkylwhNCGw9GjPelr9pS";
        assertTrue(new Passwords("bcrypt-pepper", 4, "pepper-1").verify("correct horse battery", python));
        assertFalse(new Passwords("bcrypt-pepper", 4, "pepper-2").verify("correct horse battery", python));
        String hex = HexFormat.of().formatHex(FieldCrypto.hmac("pepper-1".getBytes(StandardCharsets.UTF_8),
                "correct horse battery".getBytes(StandardCharsets.UTF_8)));
        assertTrue(p("bcrypt").verify(hex, python));
        assertThrows(Passwords.NoPepperException.class, () -> p("bcrypt-pepper").hash("password123"));
    }

    @Test
    void argon2idVerifiesTheReferenceVectorAndAPythonMadeString() {
        String reference = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        assertTrue(p("argon2id").verify("password", reference));
        assertFalse(p("argon2id").verify("passwore", reference));
        String python = "$argon2id$v=19$m=19456,t=2,p=1$sEAKchHekBk3cWpmtdVy5w$ajdkqNWVfCWgGse8EbUMi38CGSXtGrJDZDM8rx1bakE";
        assertTrue(p("argon2id").verify("correct horse battery", python));
    }

    @Test
    void argon2idStoresTheRustCryptoDefaults() {
        String s = p("argon2id").hash("password123");
        assertTrue(s.matches("\\$argon2id\\$v=19\\$m=19456,t=2,p=1\\$[A-Za-z0-9+/]{22}\\$[A-Za-z0-9+/]{43}"), s);
        assertTrue(p("argon2id").verify("password123", s));
    }

    @Test
    void plaintextAndSha256AreWhatTheySayAndOtherModesValuesAreFalse() {
        assertEquals("password123", p("plaintext").hash("password123"));
        String sha = "ef92b778bafe771e89245b89ecbc08a44a4e166c06659911881f383d4473e94f";
        assertEquals(sha, p("sha256").hash("password123"));
        String argon = p("argon2id").hash("password123");
        String[][] cases = {{"bcrypt", argon}, {"argon2id", sha}, {"bcrypt", ""}, {"argon2id", "$argon2id$v=19$m=19456,t=2,p=1$junk"},
            {"bcrypt", "x".repeat(1000)}, {"sha256", argon}, {"plaintext", sha}};
        for (String[] c : cases) assertFalse(p(c[0]).verify("password123", c[1]), c[0] + " on " + c[1]);
    }

    @Test
    void theHashingGateRefusesWithBusyOnceTheWaitRunsOut() throws Exception {
        Limits d = Limits.defaults();
        Guards g = new Guards(new Limits(4, d.maxBodyBytes(), 6, 200, 500, 10, 1, 50, 2));
        CountDownLatch started = new CountDownLatch(1), release = new CountDownLatch(1);
        var pool = Executors.newSingleThreadExecutor();
        var first = pool.submit(() -> g.hash(() -> {
            started.countDown();
            try {
                release.await();
            } catch (InterruptedException e) {
                throw new RuntimeException(e);
            }
            return 1;
        }));
        started.await();
        ApiError e = assertThrows(ApiError.class, () -> g.hash(() -> 2));
        assertEquals(503, e.status());
        assertEquals("busy", e.code());
        assertEquals("1", e.headers().get("Retry-After"));
        release.countDown();
        assertEquals(1, first.get());
        assertEquals(2, g.hash(() -> 2));
        pool.shutdown();
        @SuppressWarnings("unchecked")
        var hashing = (java.util.Map<String, Object>) g.snapshot().get("hashing");
        assertEquals(1L, hashing.get("refused"));
    }
}
