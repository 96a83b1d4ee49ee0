# frozen_string_literal: true

# /graphql: queries and mutations on POST (CONTRACT.md §7); another method is a 405 (no
# GraphiQL page: it loaded its scripts from a public CDN, and the console runs GraphQL).
#
# A request refused before it ran (syntax, limits, validation, an unknown operation, bad
# variables) is a 400 carrying GraphQL's own fields and the API error; one that ran is a 200,
# its field errors carrying the REST error's code and field in extensions.
class GraphqlController < SessionController
  S = Stacklab::Body
  REQUEST = { "query" => [S::STR, false], "operationName" => [S::STR, false],
              "variables" => [S::OBJECT, false], "extensions" => [S::OBJECT, false] }.freeze

  def execute
    # Unknown fields are ignored, as async-graphql's request type does.
    b = body_fields(REQUEST, "a GraphQL request", strict: false)
    refused, response = run(b.fetch("query", ""), b["operationName"], b["variables"])
    return render_json(200, response) unless refused

    errors = response["errors"]
    more = errors.size == 1 ? "" : " (and #{errors.size - 1} more)"
    err = Stacklab::ApiError.invalid("query", "the GraphQL request was refused before it ran: " \
                                              "#{errors.first['message']}#{more}; fix the query and send it again")
    render_json(400, response.merge(err.body))
  end

  private

  def refuse(errors) = [true, { "data" => nil, "errors" => errors }]

  def run(query, operation_name, variables)
    doc = begin
      GraphQL.parse(query)
    rescue GraphQL::ParseError => e
      error = { "message" => e.message }
      error["locations"] = [{ "line" => e.line, "column" => e.col }] if e.line
      return refuse([error])
    end
    begin
      why = Stacklab::GraphqlLimits.refusal(doc, variables, runtime.config)
    rescue SystemStackError
      return refuse([{ "message" => "the query is nested too deeply to be checked" }])
    end
    if why
      runtime.guard.graphql_refused if why.is_a?(Array)
      return refuse([{ "message" => Array(why).last }])
    end
    result = StacklabSchema.execute(document: doc, variables: variables || {}, operation_name: operation_name,
                                    context: { session: session, trace: trace }).to_h
    errors = result["errors"] || []
    # No data at all: refused by validation or variable coercion; GraphQL's errors there carry
    # paths into the document and codes of graphql-ruby's own, which the contract does not have.
    unless result.key?("data")
      return refuse(errors.map { |e| e.slice("message", "locations") })
    end

    response = { "data" => result["data"] }
    response["errors"] = errors unless errors.empty?
    [false, response]
  rescue SystemStackError
    refuse([{ "message" => "the query is nested too deeply to be run" }])
  end
end
