# frozen_string_literal: true

# With a Gemfile.lock whose gems are installed (bundle install, or Debian's packages, which
# Bundler finds in local mode), Bundler sets up the load path; STACKLAB_RUBY_NO_BUNDLER=1 uses
# the system's gems as they are (bin/stacklab-ruby says when).
ENV["BUNDLE_GEMFILE"] ||= File.expand_path("../Gemfile", __dir__)
require "bundler/setup" unless ENV["STACKLAB_RUBY_NO_BUNDLER"] == "1"
