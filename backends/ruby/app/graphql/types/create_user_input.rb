# frozen_string_literal: true

module Types
  class CreateUserInput < GraphQL::Schema::InputObject
    argument :username, String, required: true
    argument :email, String, required: true
    argument :password, String, required: true
    argument :full_name, String, required: false
  end
end
