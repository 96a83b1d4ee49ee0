# frozen_string_literal: true

module Types
  # The root types' base: every resolver calls the request's session (context[:session]) with
  # its trace, as REST does.
  class BaseObject < GraphQL::Schema::Object
    private

    def session = context[:session]
    def trace = context[:trace]
  end
end
