package stacklab.security;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.HexFormat;
import java.util.List;
import org.bouncycastle.crypto.generators.Argon2BytesGenerator;
import org.bouncycastle.crypto.generators.OpenBSDBCrypt;
import org.bouncycastle.crypto.params.Argon2Parameters;

/**
 * Password storage, five ways, from "never do this" to "do this" (CONTRACT.md §11). The stored
 * forms are the ones every runtime writes and reads: plaintext as typed; unsalted SHA-256 hex;
 * bcrypt {@code $2b$CC$…}; bcrypt of hex(HMAC-SHA-256(pepper, password)); and the argon2id PHC
 * string with the RustCrypto defaults (m=19456, t=2, p=1, 16-byte salt, 32-byte hash).
 * bcrypt and argon2id are BouncyCastle's ({@link OpenBSDBCrypt} speaks {@code $2b$} and hashes
 * the password's bytes with the terminating NUL, as OpenBSD does; jBCrypt 0.4 knows only
 * {@code $2a$}). Callers run these through the instance's hashing gate ({@link Guards}).
 */
public final class Passwords {
    public static final List<String> MODES = List.of("plaintext", "sha256", "bcrypt", "bcrypt-pepper", "argon2id");

    private static final int ARGON_M = 19456, ARGON_T = 2, ARGON_P = 1, ARGON_SALT = 16, ARGON_OUT = 32;
    private static final String ARGON_PREFIX = "$argon2id$v=19$";
    private static final SecureRandom RANDOM = new SecureRandom();
    private static final Base64.Encoder B64 = Base64.getEncoder().withoutPadding();

    private final String mode;
    private final int bcryptCost;
    private final byte[] pepper;

    /** A bcrypt-pepper session without a pepper: a 500, never a hash without it. */
    public static final class NoPepperException extends RuntimeException {
        public NoPepperException() { super("bcrypt-pepper needs a pepper from control", null, false, false); }
    }

    public Passwords(String mode, int bcryptCost, String pepper) {
        if (!MODES.contains(mode)) throw new IllegalArgumentException("unknown password mode " + mode);
        this.mode = mode;
        this.bcryptCost = bcryptCost;
        this.pepper = pepper.getBytes(StandardCharsets.UTF_8);
    }

    public String mode() { return mode; }

    public String hash(String password) {
        return switch (mode) {
            case "plaintext" -> password;
            case "sha256" -> sha256Hex(password);
            case "bcrypt" -> bcrypt(password.getBytes(StandardCharsets.UTF_8), bcryptCost);
            case "bcrypt-pepper" -> bcrypt(peppered(password), bcryptCost);
            default -> argon2id(password.getBytes(StandardCharsets.UTF_8), salt(ARGON_SALT));
        };
    }

    public boolean verify(String password, String stored) {
        return switch (mode) {
            case "plaintext" -> constEq(password.getBytes(StandardCharsets.UTF_8), stored.getBytes(StandardCharsets.UTF_8));
            case "sha256" -> constEq(sha256Hex(password).getBytes(StandardCharsets.US_ASCII), stored.getBytes(StandardCharsets.UTF_8));
            // bcrypt stops at a NUL; a password holding one was never stored.
            case "bcrypt" -> password.indexOf('\0') < 0 && bcryptVerify(password.getBytes(StandardCharsets.UTF_8), stored);
            case "bcrypt-pepper" -> bcryptVerify(peppered(password), stored);
            default -> argon2idVerify(password.getBytes(StandardCharsets.UTF_8), stored);
        };
    }

    private byte[] peppered(String password) {
        if (pepper.length == 0) throw new NoPepperException();
        return HexFormat.of().formatHex(FieldCrypto.hmac(pepper, password.getBytes(StandardCharsets.UTF_8)))
                .getBytes(StandardCharsets.US_ASCII);
    }

    static String sha256Hex(String s) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    static boolean constEq(byte[] a, byte[] b) { return MessageDigest.isEqual(a, b); }

    static byte[] salt(int n) {
        byte[] s = new byte[n];
        RANDOM.nextBytes(s);
        return s;
    }

    static String bcrypt(byte[] password, int cost) {
        return OpenBSDBCrypt.generate("2b", password, salt(16), cost);
    }

    static boolean bcryptVerify(byte[] password, String stored) {
        if (stored.length() != 60 || !stored.matches("\\$2[aby]\\$[0-9]{2}\\$[./A-Za-z0-9]{53}")) return false;
        try {
            return OpenBSDBCrypt.checkPassword(stored, password);
        } catch (RuntimeException e) {
            return false;
        }
    }

    static String argon2id(byte[] password, byte[] salt) {
        byte[] out = argon(password, salt, ARGON_M, ARGON_T, ARGON_P, ARGON_OUT);
        return ARGON_PREFIX + "m=" + ARGON_M + ",t=" + ARGON_T + ",p=" + ARGON_P + "$" + B64.encodeToString(salt) + "$" + B64.encodeToString(out);
    }

    private static byte[] argon(byte[] password, byte[] salt, int m, int t, int p, int len) {
        Argon2BytesGenerator g = new Argon2BytesGenerator();
        g.init(new Argon2Parameters.Builder(Argon2Parameters.ARGON2_id).withVersion(Argon2Parameters.ARGON2_VERSION_13)
                .withMemoryAsKB(m).withIterations(t).withParallelism(p).withSalt(salt).build());
        byte[] out = new byte[len];
        g.generateBytes(password, out);
        return out;
    }

    /** Parameters are read from the string; anything that does not parse is false. */
    static boolean argon2idVerify(byte[] password, String stored) {
        String[] parts = stored.split("\\$", -1);
        // "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
        if (parts.length != 6 || !parts[0].isEmpty() || !parts[1].equals("argon2id") || !parts[2].equals("v=19")) return false;
        int m = -1, t = -1, p = -1;
        for (String kv : parts[3].split(",", -1)) {
            String[] x = kv.split("=", 2);
            if (x.length != 2 || !x[1].matches("[0-9]{1,9}")) return false;
            int v = Integer.parseInt(x[1]);
            switch (x[0]) {
                case "m" -> m = v;
                case "t" -> t = v;
                case "p" -> p = v;
                default -> { return false; }
            }
        }
        if (m < 8 || t < 1 || p < 1 || m > 1 << 22 || t > 64 || p > 64 || m < 8 * p) return false;
        byte[] salt, hash;
        try {
            salt = Base64.getDecoder().decode(parts[4]);
            hash = Base64.getDecoder().decode(parts[5]);
        } catch (IllegalArgumentException e) {
            return false;
        }
        if (parts[4].endsWith("=") || parts[5].endsWith("=") || salt.length < 8 || hash.length < 4 || hash.length > 64) return false;
        return constEq(argon(password, salt, m, t, p, hash.length), hash);
    }
}
