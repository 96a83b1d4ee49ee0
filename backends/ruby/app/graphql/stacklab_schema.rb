# frozen_string_literal: true

# The users schema of CONTRACT.md §7, over the same service as REST. Errors of the service
# become field errors carrying the REST error's message, code and field; anything else is an
# internal error whose detail only the log sees.
class StacklabSchema < GraphQL::Schema
  query Types::QueryType
  mutation Types::MutationType

  rescue_from(Stacklab::ApiError) do |err, _obj, _args, _ctx, field|
    Rails.logger.warn("GraphQL field #{field&.graphql_name} failed: #{err.detail || err.message}") if err.status >= 500
    extensions = { "code" => err.code }
    extensions["field"] = err.field if err.field
    raise GraphQL::ExecutionError.new(err.message, extensions: extensions)
  end

  rescue_from(StandardError) do |err, _obj, _args, _ctx, field|
    Rails.logger.error("GraphQL field #{field&.graphql_name} failed: #{err.class}: #{err.message}")
    internal = Stacklab::ApiError.internal("resolver")
    raise GraphQL::ExecutionError.new(internal.message, extensions: { "code" => internal.code })
  end
end
