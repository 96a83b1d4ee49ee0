# frozen_string_literal: true

module Types
  class UserPageType < GraphQL::Schema::Object
    graphql_name "UserPage"

    field :items, [UserType], null: false
    field :total, Int64, null: false
    field :limit, Int64, null: false
    field :offset, Int64, null: false
  end
end
