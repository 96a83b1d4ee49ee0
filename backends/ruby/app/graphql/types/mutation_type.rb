# frozen_string_literal: true

module Types
  class MutationType < BaseObject
    graphql_name "Mutation"

    field :create_user, UserType, null: false do
      argument :input, CreateUserInput, required: true
    end

    field :update_user, UserType, null: false do
      argument :id, Int64, required: true
      argument :input, UpdateUserInput, required: true
    end

    field :delete_user, Boolean, null: false do
      argument :id, Int64, required: true
    end

    field :verify_password, Boolean, null: false do
      argument :id, Int64, required: true
      argument :password, String, required: true
    end

    def create_user(input:)
      session.create(input[:username], input[:email], input[:password], input[:full_name], trace)
    end

    def update_user(id:, input:)
      session.update(id, input.to_h.transform_keys(&:to_s), trace)
    end

    def delete_user(id:)
      session.delete(id, trace)
      true
    end

    def verify_password(id:, password:) = session.verify_password(id, password, trace)
  end
end
