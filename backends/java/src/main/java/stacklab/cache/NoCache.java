package stacklab.cache;

import java.util.List;

/** No cache: every read goes to the database ({@code x-stacklab-cache: bypass}). */
public final class NoCache implements Cache {
    @Override public String engine() { return "none"; }
    @Override public String get(String key) { return null; }
    @Override public void set(String key, String value, long ttlMs) {}
    @Override public void delete(String key) {}
    @Override public List<Item> items(int limit) { return List.of(); }
    @Override public Stats stats() { return new Stats(0, 0, 0, 0, 0); }
    @Override public Policy policy() { return new Policy("none", List.of(), false, "no cache: every read goes to the database"); }
    @Override public void setPolicy(String name) throws CacheException {
        throw new CacheException.Refused("this session has no cache, so there is no policy to change");
    }
    @Override public void flush() {}
    @Override public void close() {}
}
