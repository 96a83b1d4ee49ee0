package stacklab.store;

/** The database failed; the message names the engine and host, never a connection string. */
public class StoreException extends Exception {
    public StoreException(String message) { super(message); }

    /** A unique index said no: {@code field} is {@code email} or {@code username}. */
    public static final class Conflict extends StoreException {
        public final String field;

        public Conflict(String field) {
            super(field + " is already taken");
            this.field = field;
        }
    }
}
