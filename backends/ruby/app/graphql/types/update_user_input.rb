# frozen_string_literal: true

module Types
  class UpdateUserInput < GraphQL::Schema::InputObject
    argument :username, String, required: false
    argument :email, String, required: false
    argument :password, String, required: false
    argument :full_name, String, required: false
  end
end
