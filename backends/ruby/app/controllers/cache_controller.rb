# frozen_string_literal: true

# The session's cache (CONTRACT.md §8): what it holds, its policy (switchable where the engine
# allows), a flush of the session's entries only.
class CacheController < SessionController
  POLICY = { "policy" => [Stacklab::Body::STR, true] }.freeze

  def show = render_json(200, view)

  def policy
    b = body_fields(POLICY, "a policy")
    # One canonical name everywhere: " ALLKEYS-LFU " is applied, shown and reported as "allkeys-lfu".
    name = Stacklab::Rules.trim(b["policy"]).downcase
    cache_call { session.cache.set_policy(name) }
    runtime.sessions.cache_policy_changed(session.code, name)
    render_json(200, view)
  end

  def flush
    cache_call { session.cache.flush }
    render_json(200, view)
  end

  private

  def view
    c = session.cache
    items, stats, policy = cache_call { [c.items, c.stats, c.policy] }
    { "engine" => c.engine, "policy" => policy["policy"], "policies" => policy["policies"],
      "changeable" => policy["changeable"], "note" => policy["note"], "items" => items, "stats" => stats }
  end

  def cache_call
    yield
  rescue Stacklab::CacheError => e
    raise e.to_api
  end
end
