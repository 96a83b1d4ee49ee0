# frozen_string_literal: true

# DELETE /internal/sessions/:code: control tells the instance to forget a session (its
# descriptor and connections), with the runtime credential as a bearer token.
class InternalController < ApplicationController
  def forget
    auth = request.authorization.to_s
    token = auth.start_with?("Bearer ") ? auth.delete_prefix("Bearer ") : ""
    raise Stacklab::ApiError.unauthorized if token.empty?
    raise Stacklab::ApiError.forbidden unless runtime.credential_matches?(token)

    code = request.path_parameters[:code]
    runtime.sessions.close(code)
    render_json(200, { "closed" => code })
  end
end
