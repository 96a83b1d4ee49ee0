package stacklab.cache;

/** A cache adapter's failure: the engine failed, a policy is unknown, or a change is refused. */
public class CacheException extends Exception {
    public CacheException(String message) { super(message); }

    /** A policy name the engine does not have (400 invalid policy). */
    public static final class UnknownPolicy extends CacheException {
        public UnknownPolicy(String engine, String policy, java.util.List<String> choices) {
            super("`" + policy + "` is not a policy of " + engine + "; choose one of: " + String.join(", ", choices));
        }
    }

    /** A change refused on purpose (409 refused). */
    public static final class Refused extends CacheException {
        public Refused(String why) { super(why); }
    }
}
