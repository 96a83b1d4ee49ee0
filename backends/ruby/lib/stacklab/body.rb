# frozen_string_literal: true

require "json"
require_relative "errors"

module Stacklab
  # JSON request bodies (CONTRACT.md §4): the media type must be application/json (415, checked
  # before the body is read); a body over max_body_bytes is a 413; then UTF-8 JSON holding one
  # object, or 400. Unknown, missing and duplicate fields are 400 invalid naming the field; a value
  # of the wrong type is 400 bad_request naming it; null for an optional field means absent.
  #
  # Rails' own parameter parsing is not used for bodies: it keeps the last of duplicate keys,
  # and its errors do not name fields.
  module Body
    STR = "a string"
    U32 = "a non-negative whole number below 2^32"
    OBJECT = "an object"

    # A JSON object that remembers its first duplicate key (JSON.parse keeps the last silently).
    class Object < Hash
      attr_reader :duplicate

      def []=(key, value)
        @duplicate ||= key if key?(key)
        super
      end
    end

    module_function

    def json?(request)
      media = request.get_header("CONTENT_TYPE").to_s.split(";", 2).first.to_s.strip
      media.casecmp?("application/json")
    end

    def read(request, max_bytes)
      raise ApiError.unsupported_media_type unless json?(request)

      length = request.content_length.to_i
      raise ApiError.too_large(max_bytes) if length > max_bytes

      input = request.body
      raw = input.read(max_bytes + 1) || +""
      raise ApiError.too_large(max_bytes) if raw.bytesize > max_bytes

      raw.force_encoding(Encoding::UTF_8)
      raise ApiError.bad_request("the body is not valid UTF-8; send UTF-8 JSON") unless raw.valid_encoding?

      value = begin
        JSON.parse(raw, object_class: Object, create_additions: false, allow_nan: false, max_nesting: 128)
      rescue JSON::ParserError => e
        raise ApiError.bad_request("the body is not the JSON this takes: #{e.message.lines.first.to_s.strip[0, 200]}")
      end
      check_values(value)
      value
    end

    # Strings must be valid Unicode (a lone surrogate escape is refused, as serde refuses it);
    # numbers must be finite.
    def check_values(value)
      stack = [value]
      until stack.empty?
        v = stack.pop
        case v
        when String
          raise ApiError.bad_request("the body is not the JSON this takes: a string holds a lone surrogate escape") unless v.valid_encoding?
        when Hash then stack.concat(v.keys, v.values)
        when Array then stack.concat(v)
        when Float
          raise ApiError.bad_request("the body is not the JSON this takes: a number is out of range") unless v.finite?
        end
      end
    end

    # Checks an object against {name => [type, required]}; returns only the given fields (nulls
    # dropped). strict refuses unknown fields.
    def fields(value, spec, what, strict: true)
      raise ApiError.bad_request("the body is not the JSON this takes: expected #{what} as a JSON object") unless value.is_a?(Hash)

      dup = value.respond_to?(:duplicate) ? value.duplicate : nil
      if dup && (strict || spec.key?(dup))
        raise ApiError.invalid(dup, "duplicate field `#{dup}`; fix the body and send it again")
      end
      if strict
        value.each_key do |k|
          next if spec.key?(k)

          raise ApiError.invalid(k, "unknown field `#{k}`, expected one of #{spec.keys.map { |n| "`#{n}`" }.join(', ')}; " \
                                    "fix the body and send it again")
        end
      end
      spec.each_with_object({}) do |(name, (kind, required)), out|
        v = value[name]
        if v.nil?
          raise ApiError.invalid(name, "missing field `#{name}`; fix the body and send it again") if required

          next
        end
        unless kind?(kind, v)
          got = kind == U32 && v.is_a?(Integer) ? "an integer out of range" : kind_of(v)
          raise ApiError.bad_request("the body is not the JSON this takes: `#{name}` must be #{kind}, not #{got}", field: name)
        end
        out[name] = v
      end
    end

    def kind?(kind, v)
      case kind
      when STR then v.is_a?(String)
      when U32 then v.is_a?(Integer) && v >= 0 && v < 2**32
      when OBJECT then v.is_a?(Hash)
      end
    end

    def kind_of(v)
      case v
      when true, false then "a boolean"
      when Integer then "an integer"
      when Float then "a floating point number"
      when String then "a string"
      when Array then "an array"
      when Hash then "an object"
      else "null"
      end
    end
  end
end
