# frozen_string_literal: true

module Types
  # The contract's `Int` is async-graphql's: 64 bits (createdAt is Unix milliseconds, beyond
  # GraphQL's usual 32). graphql-ruby's own Int is 32-bit, so this scalar takes its name; the
  # built-in one appears nowhere in the schema.
  class Int64 < GraphQL::Schema::Scalar
    graphql_name "Int"
    description "A 64-bit signed whole number."

    RANGE = (-(2**63)..(2**63 - 1)).freeze

    def self.coerce_input(value, _ctx)
      unless value.is_a?(Integer) && RANGE.cover?(value)
        raise GraphQL::CoercionError, "Int cannot represent value: #{value.inspect} (a 64-bit whole number is expected)"
      end

      value
    end

    def self.coerce_result(value, _ctx) = value
  end
end
