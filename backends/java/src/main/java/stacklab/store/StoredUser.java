package stacklab.store;

/** A user as the store holds it: every value in stored form (hash, ciphertext). */
public record StoredUser(long id, String username, String email, String fullName, String password, long createdAt, long updatedAt) {}
