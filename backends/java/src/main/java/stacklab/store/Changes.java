package stacklab.store;

/** The columns an update sets (null = unchanged), all in stored form, and the new updated_at. */
public record Changes(String username, String usernameKey, String email, String emailKey, String fullName, String password, long now) {}
