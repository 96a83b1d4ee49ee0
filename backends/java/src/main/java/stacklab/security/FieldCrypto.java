package stacklab.security;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.HexFormat;
import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * Encryption at rest for personal fields and the blind index that keeps them searchable
 * (CONTRACT.md §12): AES-256-GCM (the JDK's provider) under the session's key with a fresh
 * 96-bit nonce per value, stored as {@code "v1:" + base64(nonce ‖ ciphertext ‖ tag)}; the index
 * is HMAC-SHA-256 under a key derived from the session key, so it cannot decrypt anything.
 */
public final class FieldCrypto {
    private static final String PREFIX = "v1:";
    private static final byte[] INDEX_LABEL = "stacklab blind index v1".getBytes(StandardCharsets.US_ASCII);
    private static final int NONCE = 12;
    private static final int TAG_BITS = 128;
    private static final SecureRandom RANDOM = new SecureRandom();

    private final SecretKeySpec key;
    private final byte[] indexKey;

    /** Thrown for a key that is not base64 of 32 bytes, or a stored value that does not open. */
    public static final class CryptoException extends Exception {
        public CryptoException(String message) { super(message); }
    }

    public FieldCrypto(String keyBase64) throws CryptoException {
        byte[] raw;
        try {
            raw = Base64.getDecoder().decode(keyBase64);
        } catch (IllegalArgumentException e) {
            throw new CryptoException("the session's encryption key is not base64");
        }
        if (raw.length != 32 || keyBase64.length() != 44) throw new CryptoException("the session's encryption key is not 32 bytes");
        this.key = new SecretKeySpec(raw, "AES");
        this.indexKey = hmac(raw, INDEX_LABEL);
    }

    public String seal(String plain) {
        byte[] nonce = new byte[NONCE];
        RANDOM.nextBytes(nonce);
        try {
            Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
            c.init(Cipher.ENCRYPT_MODE, key, new GCMParameterSpec(TAG_BITS, nonce));
            byte[] body = c.doFinal(plain.getBytes(StandardCharsets.UTF_8));
            byte[] out = new byte[NONCE + body.length];
            System.arraycopy(nonce, 0, out, 0, NONCE);
            System.arraycopy(body, 0, out, NONCE, body.length);
            return PREFIX + Base64.getEncoder().encodeToString(out);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-256-GCM is missing from this JDK", e);
        }
    }

    public String open(String stored) throws CryptoException {
        if (!stored.startsWith(PREFIX)) throw new CryptoException("a stored value is not ciphertext");
        byte[] raw;
        try {
            raw = Base64.getDecoder().decode(stored.substring(PREFIX.length()));
        } catch (IllegalArgumentException e) {
            throw new CryptoException("a stored value is not base64");
        }
        if (raw.length < NONCE + TAG_BITS / 8) throw new CryptoException("a stored value is too short to be ciphertext");
        byte[] plain;
        try {
            Cipher c = Cipher.getInstance("AES/GCM/NoPadding");
            c.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_BITS, raw, 0, NONCE));
            plain = c.doFinal(raw, NONCE, raw.length - NONCE);
        } catch (GeneralSecurityException e) {
            throw new CryptoException("a stored value does not decrypt under this session's key");
        }
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(plain)).toString();
        } catch (CharacterCodingException e) {
            throw new CryptoException("a decrypted value is not UTF-8");
        }
    }

    /** The blind index of an already normalized (trimmed, lower-cased) value: 64 hex chars. */
    public String index(String normalized) {
        return HexFormat.of().formatHex(hmac(indexKey, normalized.getBytes(StandardCharsets.UTF_8)));
    }

    static byte[] hmac(byte[] key, byte[] message) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            return mac.doFinal(message);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HMAC-SHA-256 is missing from this JDK", e);
        }
    }
}
