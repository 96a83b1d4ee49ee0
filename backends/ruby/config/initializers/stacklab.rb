# frozen_string_literal: true

# Request bodies are read by Stacklab::Body (strict JSON, fields named in errors), never by
# Rails' parameter parsers: they keep the last of duplicate keys and would parse a body the API
# refuses anyway. `params` then holds the path and query parameters only.
ActionDispatch::Request.parameter_parsers = {}
# (lib/stacklab/edge.rb also sets the parsed query and body to empty before Rails sees them.)
