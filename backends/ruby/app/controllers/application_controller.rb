# frozen_string_literal: true

# Every controller answers JSON, and every error as the contract's error body (CONTRACT.md §5):
# an ApiError with its status, anything else a 500 whose detail only the log sees.
class ApplicationController < ActionController::API
  rescue_from StandardError, with: :unexpected
  rescue_from Stacklab::ApiError, with: :api_error

  # A method that is not routed for a known path, and a path nothing is routed to.
  def method_not_allowed = raise(Stacklab::ApiError.method_not_allowed)
  def no_route = raise(Stacklab::ApiError.no_route(request.get_header("stacklab.path") || request.path))

  private

  def runtime = Stacklab::Runtime.current
  def trace = request.get_header("stacklab.trace")

  def render_json(status, value)
    render body: JSON.generate(value), status: status, content_type: "application/json"
  end

  def api_error(err)
    if err.status >= 500
      # The proxy's request id ties this line to the inspector's capture.
      logger.warn("request #{request.get_header('HTTP_X_REQUEST_ID') || '-'} failed: #{err.code} #{err.detail || err.message}")
    end
    err.headers.each { |k, v| response.set_header(k, v) }
    render_json(err.status, err.body)
  end

  def unexpected(err)
    logger.error("request #{request.get_header('HTTP_X_REQUEST_ID') || '-'} failed: #{request.method} " \
                 "#{request.path}: #{err.class}: #{err.message}\n#{err.backtrace&.first(8)&.join("\n")}")
    api_error(Stacklab::ApiError.internal(err.class.name))
  end

  # The body of a POST/PATCH/PUT, checked against {name => [type, required]}.
  def body_fields(spec, what, strict: true)
    Stacklab::Body.fields(Stacklab::Body.read(request, runtime.config.max_body_bytes), spec, what, strict: strict)
  end

  # Query parameters as the contract reads them: pairs split on "&", the first with the name wins,
  # "+" a space, %XX a byte, decoded as lossy UTF-8 (Rack's parser keeps the last, and refuses
  # malformed escapes).
  def query_param(name)
    @query ||= request.query_string.split("&").each_with_object({}) do |pair, out|
      k, v = pair.split("=", 2)
      k = decode(k)
      out[k] = decode(v.to_s) unless out.key?(k)
    end
    @query[name]
  end

  def decode(text)
    text.tr("+", " ").b.gsub(/%(\h\h)/) { Regexp.last_match(1).hex.chr }.force_encoding(Encoding::UTF_8).scrub("\uFFFD")
  end
end
