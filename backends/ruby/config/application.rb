# frozen_string_literal: true

require_relative "boot"

require "rails"
require "action_controller/railtie"
# Active Record without its railtie: there is no config/database.yml and no application-wide
# database. Every database is a session's own, opened at run time (lib/stacklab/store.rb), and
# the railtie's per-request hooks (query cache, connection release) are done there explicitly.
require "active_record"
require "graphql"

require_relative "../lib/stacklab/config"
require_relative "../lib/stacklab/edge"
require_relative "../lib/stacklab/sessions"
require_relative "../lib/stacklab/guard"
require_relative "../lib/stacklab/body"
require_relative "../lib/stacklab/analysis"
require_relative "../lib/stacklab/graphql_limits"
require_relative "../lib/stacklab/runtime"

module StacklabRuby
  # stacklab's users API in Rails, API mode. One instance is one Puma process with a pool of
  # threads (never several workers: a session's in-process cache must be one per instance).
  class Application < Rails::Application
    config.load_defaults 6.1
    config.api_only = true
    config.root = File.expand_path("..", __dir__)
    config.eager_load = true
    config.cache_classes = true
    config.secret_key_base = SecureRandom.hex(64) # nothing is signed: no cookies, no sessions
    config.hosts.clear # the proxy in front decides which hosts reach an instance
    config.logger = ActiveSupport::Logger.new($stderr)
    config.log_level = ENV.fetch("STACKLAB_RUBY_LOG", "warn").to_sym
    config.logger.formatter = proc { |sev, time, _p, msg| "#{time.utc.iso8601(3)} #{sev} stacklab_ruby: #{msg}\n" }

    # Every error is the contract's JSON: no HTML error page, no debug page, ever.
    config.consider_all_requests_local = false
    config.action_dispatch.show_exceptions = true
    config.exceptions_app = ->(env) { ErrorsController.action(:exception).call(env) }
    config.action_dispatch.default_headers = {}
    config.active_support.escape_html_entities_in_json = false

    # Only what this API uses; the rest of the default API stack would add headers (X-Runtime,
    # ETag, X-Request-Id) the contract does not have, or parse what the API reads itself.
    %w[Rack::Runtime Rack::ETag Rack::ConditionalGet ActionDispatch::RequestId ActionDispatch::RemoteIp
       Rack::Head ActionDispatch::HostAuthorization Rack::Sendfile ActionDispatch::ActionableExceptions
       ActionDispatch::Reloader ActiveSupport::Cache::Strategy::LocalCache::Middleware].each do |name|
      config.middleware.delete(name.constantize)
    rescue NameError
      nil
    end
    config.middleware.insert_before 0, Stacklab::Edge, config.logger
  end
end
