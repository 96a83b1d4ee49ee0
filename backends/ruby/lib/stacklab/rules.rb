# frozen_string_literal: true

require_relative "config"

module Stacklab
  # The input rules of CONTRACT.md §6; each failure is 400 invalid naming its field.
  module Rules
    module_function

    C = Config

    # Rust's str::trim: Unicode white space at both ends. (Ruby's String#strip also strips NUL,
    # which the rules must see.)
    def trim(v) = v.gsub(/\A[[:space:]]+|[[:space:]]+\z/, "")

    def username(v)
      v = trim(v)
      unless (C::MIN_USERNAME..C::MAX_USERNAME).cover?(v.length)
        raise ApiError.invalid("username", "a username is #{C::MIN_USERNAME} to #{C::MAX_USERNAME} characters")
      end
      raise ApiError.invalid("username", "use letters, digits, `_`, `.` or `-` in a username") unless v.match?(/\A[A-Za-z0-9_.\-]+\z/)

      v
    end

    def email(v)
      v = trim(v)
      raise ApiError.invalid("email", "an email address is 3 to #{C::MAX_EMAIL} characters") if v.empty? || v.length > C::MAX_EMAIL

      bad = ApiError.invalid("email", "give an email address like name@example.com")
      at = v.rindex("@") or raise bad
      local = v[0...at]
      domain = v[(at + 1)..]
      domain_ok = domain.include?(".") && !domain.start_with?(".") && !domain.end_with?(".") &&
                  domain.match?(/\A[[:alnum:].\-]*\z/)
      raise bad if local.empty? || local.include?("@") || !domain_ok || v.match?(/[[:space:][:cntrl:]]/)

      v
    end

    def password(v)
      if v.length < C::MIN_PASSWORD || v.bytesize > C::MAX_PASSWORD
        raise ApiError.invalid("password", "a password is #{C::MIN_PASSWORD} characters to #{C::MAX_PASSWORD} bytes")
      end
      # PostgreSQL text cannot hold NUL and bcrypt stops reading at one: refused everywhere.
      raise ApiError.invalid("password", "a password cannot contain the NUL character") if v.include?("\0")
    end

    def full_name(v)
      v = trim(v)
      if v.length > C::MAX_FULL_NAME || v.match?(/\p{Cc}/)
        raise ApiError.invalid("full_name",
                               "a full name is at most #{C::MAX_FULL_NAME} characters, without control characters")
      end
      v
    end

    I64 = (-(2**63)..(2**63 - 1)).freeze

    # A decimal i64 as Rust's str::parse reads it: an optional sign, ASCII digits only.
    def whole(text, field, message)
      raise ApiError.invalid(field, message) unless text.match?(/\A[+-]?[0-9]+\z/) && I64.cover?(text.to_i)

      text.to_i
    end

    def user_id(text)
      message = "a user id is a positive whole number"
      id = whole(text, "id", message)
      raise ApiError.invalid("id", message) unless id.positive?

      id
    end
  end
end
