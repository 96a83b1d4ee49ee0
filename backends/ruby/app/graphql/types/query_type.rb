# frozen_string_literal: true

module Types
  class QueryType < BaseObject
    graphql_name "Query"

    field :users, UserPageType, null: false,
                                description: "Users whose username (or email) contains `q`, case-insensitive; a page of them." do
      argument :q, String, required: false
      argument :limit, Int64, required: false
      argument :offset, Int64, required: false
    end

    field :user, UserType, null: false do
      argument :id, Int64, required: true
    end

    def users(q: nil, limit: nil, offset: nil) = session.list(q, limit, offset, trace)
    def user(id:) = session.get(id, trace)
  end
end
