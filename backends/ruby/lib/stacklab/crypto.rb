# frozen_string_literal: true

require "base64"
require "openssl"
require_relative "errors"

module Stacklab
  # Encryption at rest for personal fields and the blind index that keeps them searchable
  # (CONTRACT.md §12): AES-256-GCM with a fresh 96-bit nonce per value, stored as
  # "v1:" + base64(nonce ‖ ciphertext ‖ tag); the index is HMAC-SHA-256 under a key derived from
  # the session key, so the index cannot be turned into the cipher key.
  class FieldCrypto
    PREFIX = "v1:"
    INDEX_LABEL = "stacklab blind index v1"

    def initialize(key_b64)
      raw = begin
        Base64.strict_decode64(key_b64)
      rescue ArgumentError
        raise ApiError.internal("the session's encryption key is not base64")
      end
      raise ApiError.internal("the session's encryption key is not 32 bytes") unless raw.bytesize == 32

      @key = raw
      @index_key = OpenSSL::HMAC.digest("SHA256", raw, INDEX_LABEL)
    end

    def inspect = "#<FieldCrypto [redacted]>"

    def seal(plain)
      c = OpenSSL::Cipher.new("aes-256-gcm").encrypt
      c.key = @key
      nonce = OpenSSL::Random.random_bytes(12)
      c.iv = nonce
      c.auth_data = ""
      sealed = c.update(plain.b) + c.final
      PREFIX + Base64.strict_encode64(nonce + sealed + c.auth_tag)
    end

    def open(stored)
      not_ciphertext = ApiError.internal("a stored value is not ciphertext")
      raise not_ciphertext unless stored.start_with?(PREFIX)

      raw = begin
        Base64.strict_decode64(stored[PREFIX.length..])
      rescue ArgumentError
        raise not_ciphertext
      end
      raise not_ciphertext if raw.bytesize <= 12 || raw.bytesize < 28

      c = OpenSSL::Cipher.new("aes-256-gcm").decrypt
      c.key = @key
      c.iv = raw.byteslice(0, 12)
      c.auth_tag = raw.byteslice(-16, 16)
      c.auth_data = ""
      plain = c.update(raw.byteslice(12, raw.bytesize - 28)) + c.final
      plain.force_encoding(Encoding::UTF_8)
      raise ApiError.internal("decrypted value is not UTF-8") unless plain.valid_encoding?

      plain
    rescue OpenSSL::Cipher::CipherError
      raise ApiError.internal("a stored value does not decrypt under this session's key")
    end

    # The blind index of a normalized value, lowercase hex.
    def index(normalized) = OpenSSL::HMAC.hexdigest("SHA256", @index_key, normalized)
  end
end
