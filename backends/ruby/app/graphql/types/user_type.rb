# frozen_string_literal: true

module Types
  # A user as the service returns it (a Hash with the REST body's keys).
  class UserType < GraphQL::Schema::Object
    graphql_name "User"

    field :id, Int64, null: false
    field :username, String, null: false
    field :email, String, null: false
    field :full_name, String, null: false
    field :stored_password, String, null: false
    field :stored_email, String, null: false
    field :created_at, Int64, null: false
    field :updated_at, Int64, null: false
  end
end
