package stacklab.store;

/** A row to insert, every value already in stored form. */
public record NewRow(String username, String usernameKey, String email, String emailKey, String fullName, String password, long now) {}
