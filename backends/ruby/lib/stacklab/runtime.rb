# frozen_string_literal: true

require "openssl"

module Stacklab
  # What every request of this instance shares: the [backend] config, the open sessions, the
  # bounds on hashing and benchmarks, and the runtime credential. Set once at start (server.rb).
  class Runtime
    attr_reader :config, :sessions, :guard

    class << self
      attr_accessor :current
    end

    def initialize(config, sessions, guard, credential)
      @config = config
      @sessions = sessions
      @guard = guard
      @credential = credential
    end

    def inspect = "#<Runtime #{@sessions.inspect}>"

    # Constant time; an empty configured credential matches nothing.
    def credential_matches?(presented)
      !@credential.empty? && presented.bytesize == @credential.bytesize &&
        OpenSSL.fixed_length_secure_compare(presented, @credential)
    end
  end
end
