package stacklab.store;

import java.util.List;

/** A session's database (CONTRACT.md §10): it stores and finds rows already in stored form. */
public interface Store extends AutoCloseable {
    /** What a search looks for: {@code lower} null means everything. */
    record Search(String lower, String emailIndex) {
        public static final Search ALL = new Search(null, null);
    }

    record Page(List<StoredUser> rows, long total) {}

    record Size(String engine, long sizeBytes, long rows) {}

    long insert(NewRow row) throws StoreException;

    StoredUser get(long id) throws StoreException;

    Page search(Search s, int limit, long offset) throws StoreException;

    /** The row after the update, or null when there is no such row. */
    StoredUser update(long id, Changes c) throws StoreException;

    boolean delete(long id) throws StoreException;

    Size stats() throws StoreException;

    @Override
    void close();
}
