package stacklab.security;

import static org.junit.jupiter.api.Assertions.*;

import org.junit.jupiter.api.Test;

/** AES-256-GCM and the blind index (CONTRACT.md §12) against values Python's cryptography wrote. */
class FieldCryptoTest {
    private static final String KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..31

    @Test
    void opensWhatAnotherRuntimeSealedAndComputesTheSameIndex() throws Exception {
        FieldCrypto c = new FieldCrypto(KEY);
        // Python: AESGCM(key).encrypt(bytes(12), "José@Example.com", None), laid out as v1:base64(nonce ‖ ct ‖ tag)
        assertEquals("José@Example.com", c.open("v1:AAAAAAAAAAAAAAAARNPGHRxsxsVpxdlZfQLy9r+12cQrOzEYRg3ei/dx3XO8"));
        assertEquals("f87269d2c3f611a4e71193b9b3f3c247a72aa4ddf677e09a49d3ee49800a898a", c.index("josé@example.com"));
    }

    @Test
    void sealsFreshlyEachTimeAndOpensItsOwn() throws Exception {
        FieldCrypto c = new FieldCrypto(KEY);
        String a = c.seal("ann@example.com"), b = c.seal("ann@example.com");
        assertTrue(a.startsWith("v1:"));
        assertNotEquals(a, b);
        assertEquals("ann@example.com", c.open(a));
    }

    @Test
    void refusesBadKeysAndValuesThatDoNotOpen() throws Exception {
        assertThrows(FieldCrypto.CryptoException.class, () -> new FieldCrypto("not base64!"));
        assertThrows(FieldCrypto.CryptoException.class, () -> new FieldCrypto("AAAA"));
        FieldCrypto c = new FieldCrypto(KEY);
        for (String bad : new String[] {"ann@example.com", "v1:!!!", "v1:AAAA", "v1:" + "A".repeat(40)}) {
            assertThrows(FieldCrypto.CryptoException.class, () -> c.open(bad), bad);
        }
        String other = new FieldCrypto("HwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").seal("x@y.z");
        assertThrows(FieldCrypto.CryptoException.class, () -> c.open(other));
    }
}
