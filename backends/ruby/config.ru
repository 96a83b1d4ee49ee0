# frozen_string_literal: true

# For `rackup`/`puma` by hand; an instance is started by bin/stacklab-ruby (lib/stacklab/server.rb).
require_relative "config/environment"

run Rails.application
