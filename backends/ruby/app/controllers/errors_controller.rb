# frozen_string_literal: true

# Paths nothing is routed to outside /api, and the exceptions app: whatever escapes a controller
# (or is raised by a middleware) is answered as JSON here, never as Rails' HTML page.
class ErrorsController < ApplicationController
  def exception
    err = request.get_header("action_dispatch.exception")
    api_error(
      case err
      when Stacklab::ApiError then err
      when ActionController::RoutingError then Stacklab::ApiError.no_route(request.get_header("stacklab.path") || request.path)
      when ActionController::BadRequest, ActionDispatch::Http::Parameters::ParseError
        Stacklab::ApiError.bad_request("the request could not be read; send it again")
      else
        logger.error("request failed: #{err.class}: #{err&.message}")
        Stacklab::ApiError.internal(err.class.name)
      end
    )
  end
end
