# frozen_string_literal: true

# The controllers of data paths (/api/*, POST /graphql): the session named by the proxy's
# x-stacklab-session header is resolved before anything else, and each action is handed that
# session's own store and cache (lib/stacklab/store.rb explains why no global database switch
# is involved).
class SessionController < ApplicationController
  before_action :resolve_session

  private

  attr_reader :session

  def resolve_session
    code = request.get_header("HTTP_X_STACKLAB_SESSION")
    raise Stacklab::ApiError.session_missing if code.nil? || !code.b.match?(/\A[\x20-\x7e\t]*\z/n)
    raise Stacklab::ApiError.session_expired unless code.match?(/\A[A-Za-z0-9]{16,64}\z/)

    @session = runtime.sessions.get(code)
  end
end
