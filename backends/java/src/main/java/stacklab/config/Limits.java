package stacklab.config;

/**
 * The limits every request is held to (CONTRACT.md §2, §6, §9a): the configurable ones, and the
 * fixed input rules as named constants.
 */
public record Limits(
        int bcryptCost,
        long maxBodyBytes,
        int graphqlMaxDepth,
        int graphqlMaxComplexity,
        int graphqlMaxFields,
        int graphqlMaxHashes,
        int maxConcurrentHashes,
        long hashWaitMs,
        int maxConcurrentBenchmarks) {

    public static final int MIN_USERNAME = 3;
    public static final int MAX_USERNAME = 32;
    public static final int MAX_EMAIL = 254;
    public static final int MIN_PASSWORD = 8;
    /** bcrypt reads 72 bytes at most; longer passwords are refused rather than cut silently. */
    public static final int MAX_PASSWORD_BYTES = 72;
    public static final int MAX_FULL_NAME = 100;
    public static final int MAX_PAGE = 100;
    public static final int MAX_BENCHMARK_OPS = 2000;

    public static Limits defaults() {
        return new Limits(10, 64 * 1024, 6, 200, 500, 10,
                2 * Math.max(1, Runtime.getRuntime().availableProcessors()), 1000, 2);
    }
}
