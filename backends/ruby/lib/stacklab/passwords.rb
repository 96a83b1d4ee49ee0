# frozen_string_literal: true

require "base64"
require "bcrypt"
require "digest"
require "openssl"
require "rbnacl"
require_relative "errors"

module Stacklab
  # libsodium's crypto_pwhash, bound again with `blocking: true`: RbNaCl's binding keeps Ruby's
  # global VM lock for the whole hash (tens of milliseconds, 19 MiB), which would stall every
  # other Puma thread; this one lets them run meanwhile (bcrypt-ruby releases the lock itself).
  module Sodium
    extend FFI::Library
    ffi_lib ["sodium", "libsodium.so.23", "libsodium.so.18"] # as RbNaCl finds it
    attach_function :crypto_pwhash, %i[pointer ulong_long pointer ulong_long pointer ulong_long size_t int], :int,
                    blocking: true
    ALG_ARGON2ID13 = 2

    def self.argon2id(password, salt, opslimit, memlimit, len)
      out = FFI::MemoryPointer.new(:uchar, len)
      pw = FFI::MemoryPointer.new(:uchar, [password.bytesize, 1].max).put_bytes(0, password.b)
      sp = FFI::MemoryPointer.new(:uchar, salt.bytesize).put_bytes(0, salt.b)
      rc = crypto_pwhash(out, len, pw, password.bytesize, sp, opslimit, memlimit, ALG_ARGON2ID13)
      raise RbNaCl::CryptoError, "crypto_pwhash failed (out of memory?)" unless rc.zero?

      out.get_bytes(0, len)
    end
  end

  # Password storage, five ways (CONTRACT.md §11). The stored strings are those of the other
  # runtimes: bcrypt as "$2b$CC$…", argon2id as the PHC string with the RustCrypto argon2 0.5
  # defaults (m=19456 KiB, t=2, p=1, 16-byte salt, 32-byte hash). There is no argon2 gem in
  # Debian, so Argon2id comes from libsodium (crypto_pwhash, through RbNaCl), which always uses
  # one lane; the PHC string is written and read here.
  class Hasher
    MODES = %w[plaintext sha256 bcrypt bcrypt-pepper argon2id].freeze
    ARGON2_M_KIB = 19_456
    ARGON2_T = 2
    ARGON2_SALT = 16
    ARGON2_LEN = 32

    attr_reader :mode

    def initialize(mode, bcrypt_cost, pepper, guard)
      raise ApiError.internal("unknown password mode #{mode.inspect}") unless MODES.include?(mode)

      @mode = mode
      @cost = bcrypt_cost
      @pepper = pepper
      @guard = guard
    end

    def inspect = "#<Hasher mode=#{@mode} bcrypt_cost=#{@cost}>"

    def hash(password) = @guard.hash { hash_now(password) }
    def verify(password, stored) = @guard.hash { verify_now(password, stored) }

    private

    def hash_now(password)
      case @mode
      when "plaintext" then password
      when "sha256" then Digest::SHA256.hexdigest(password)
      when "bcrypt" then bcrypt(password)
      when "bcrypt-pepper" then bcrypt(peppered(password))
      else argon2id(password)
      end
    end

    def verify_now(password, stored)
      case @mode
      when "plaintext" then OpenSSL.fixed_length_secure_compare(password.b, stored.b) rescue false
      when "sha256" then OpenSSL.fixed_length_secure_compare(Digest::SHA256.hexdigest(password), stored.b) rescue false
      when "bcrypt" then bcrypt_verify(password, stored)
      when "bcrypt-pepper" then bcrypt_verify(peppered(password), stored)
      else argon2id_verify(password, stored)
      end
    end

    # bcrypt-ruby writes "$2a$"; the contract's strings are "$2b$", the same algorithm for
    # passwords under 255 bytes, which crypt_blowfish reads and writes alike.
    def bcrypt(secret)
      salt = BCrypt::Engine.generate_salt(@cost).sub(/\A\$2a\$/, "$2b$")
      BCrypt::Engine.hash_secret(secret, salt)
    end

    def bcrypt_verify(secret, stored)
      return false unless stored.match?(%r{\A\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}\z})

      OpenSSL.fixed_length_secure_compare(BCrypt::Engine.hash_secret(secret, stored[0, 29]), stored)
    rescue BCrypt::Errors::InvalidSalt, BCrypt::Errors::InvalidHash, ArgumentError
      false
    end

    # HMAC-SHA-256(pepper, password) as hex: 64 characters, under bcrypt's 72-byte limit.
    def peppered(password)
      raise ApiError.internal("bcrypt-pepper needs a pepper from control") if @pepper.to_s.empty?

      OpenSSL::HMAC.hexdigest("SHA256", @pepper, password)
    end

    def argon2id(password)
      salt = RbNaCl::Random.random_bytes(ARGON2_SALT)
      raw = Sodium.argon2id(password, salt, ARGON2_T, ARGON2_M_KIB * 1024, ARGON2_LEN)
      "$argon2id$v=19$m=#{ARGON2_M_KIB},t=#{ARGON2_T},p=1$#{b64(salt)}$#{b64(raw)}"
    end

    PHC = /\A\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+\/]+)\$([A-Za-z0-9+\/]+)\z/

    def argon2id_verify(password, stored)
      m = PHC.match(stored) or return false
      mem, t, p = m[1].to_i, m[2].to_i, m[3].to_i
      salt = unb64(m[4])
      want = unb64(m[5])
      # libsodium computes one lane only; a string with another p cannot be checked here.
      return false unless p == 1 && salt && want && salt.bytesize == ARGON2_SALT && want.bytesize >= 16
      return false unless t.between?(1, 64) && mem.between?(8, 4 * 1024 * 1024)

      got = Sodium.argon2id(password, salt, t, mem * 1024, want.bytesize)
      OpenSSL.fixed_length_secure_compare(got, want)
    rescue RbNaCl::CryptoError, ArgumentError
      false
    end

    def b64(bytes) = Base64.strict_encode64(bytes).delete("=")

    def unb64(text)
      Base64.strict_decode64(text + ("=" * ((4 - (text.length % 4)) % 4)))
    rescue ArgumentError
      nil
    end
  end
end
