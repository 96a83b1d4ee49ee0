# frozen_string_literal: true

require "graphql"

module Stacklab
  # The limits of CONTRACT.md §7, checked on the parsed document before anything runs
  # (validation included), in the Rust runtime's order and with its counting rules, so one query
  # is refused alike by every runtime: fields written out; fields once fragments are spread;
  # password hashes; complexity (users costs 10 × its children); depth.
  #
  # Fragments spread into one another multiply (48 fragments of two spreads each stand for 2^24
  # selections in 4 KB), so every count takes each fragment once and remembers its result; a
  # spread inside a cycle counts 0 (validation refuses cycles afterwards with its own error).
  module GraphqlLimits
    N = GraphQL::Language::Nodes
    COUNTLESS = 2**64 - 1

    module_function

    def definitions(doc, *kinds) = doc.definitions.select { |d| kinds.any? { |k| d.is_a?(k) } }
    def fragments(doc) = definitions(doc, N::FragmentDefinition).to_h { |f| [f.name, f] }

    # Field selections written out in every operation and fragment; a spread counts 0.
    def count_fields(doc)
      count = lambda do |sels|
        sels.sum do |s|
          case s
          when N::Field then 1 + count.call(s.selections)
          when N::InlineFragment then count.call(s.selections)
          else 0
          end
        end
      end
      definitions(doc, N::OperationDefinition, N::FragmentDefinition).sum { |d| count.call(d.selections) }
    end

    # Fields that hash a password (§9a): verifyPassword, createUser, and an updateUser whose input
    # sets a non-null password, inline or through variables (a variable not given counts).
    def count_hashes(doc, variables)
      variables = {} unless variables.is_a?(Hash)
      sets_password = lambda do |f|
        arg = f.arguments.find { |a| a.name == "input" }&.value
        case arg
        when N::InputObject
          v = arg.arguments.find { |a| a.name == "password" }&.value
          case v
          when nil, N::NullValue then false
          when N::VariableIdentifier then !(variables.key?(v.name) && variables[v.name].nil?)
          else true
          end
        when N::VariableIdentifier
          return true unless variables.key?(arg.name)

          given = variables[arg.name]
          given.is_a?(Hash) && !given["password"].nil?
        else false
        end
      end
      count = lambda do |sels|
        sels.sum do |s|
          case s
          when N::Field
            own = %w[verifyPassword createUser].include?(s.name) || (s.name == "updateUser" && sets_password.call(s)) ? 1 : 0
            own + count.call(s.selections)
          when N::InlineFragment then count.call(s.selections)
          else 0
          end
        end
      end
      definitions(doc, N::OperationDefinition, N::FragmentDefinition).sum { |d| count.call(d.selections) }
    end

    # Field selections of every operation with its fragments spread (each fragment counted once).
    def count_spread_fields(doc)
      frags = fragments(doc)
      counted = {}
      open = {}
      fragment = nil
      count = lambda do |sels|
        sels.sum do |s|
          case s
          when N::Field then 1 + count.call(s.selections)
          when N::InlineFragment then count.call(s.selections)
          when N::FragmentSpread then fragment.call(s.name)
          else 0
          end
        end
      end
      fragment = lambda do |name|
        next counted[name] if counted.key?(name)

        f = frags[name]
        next 0 if f.nil? || open[name]

        open[name] = true
        counted[name] = [count.call(f.selections), COUNTLESS].min
        open.delete(name)
        counted[name]
      end
      [definitions(doc, N::OperationDefinition).sum { |d| count.call(d.selections) }, COUNTLESS].min
    end

    # async-graphql's complexity and depth over every operation, fragments inlined, __typename
    # not visited; each fragment's numbers computed once.
    def complexity_and_depth(doc, schema)
      frags = fragments(doc)
      known = {}
      open = {}
      query_type = schema.query
      fragment = nil
      walk = lambda do |sels, parent|
        total = 0
        depth = 0
        sels.each do |s|
          case s
          when N::Field
            next if s.name == "__typename"

            field = parent.respond_to?(:fields) ? parent.fields[s.name] : nil
            child = field&.type&.unwrap
            c, below = walk.call(s.selections, child)
            total += parent == query_type && s.name == "users" ? 10 * c : 1 + c
            depth = [depth, 1 + below].max
          when N::InlineFragment
            t = s.type ? schema.get_type(s.type.name) : parent
            c, d = walk.call(s.selections, t)
            total += c
            depth = [depth, d].max
          when N::FragmentSpread
            c, d = fragment.call(s.name)
            total += c
            depth = [depth, d].max
          end
        end
        [total, depth]
      end
      fragment = lambda do |name|
        next known[name] if known.key?(name)

        f = frags[name]
        next [0, 0] if f.nil? || open[name]

        open[name] = true
        known[name] = walk.call(f.selections, schema.get_type(f.type.name))
        open.delete(name)
        known[name]
      end
      definitions(doc, N::OperationDefinition).reduce([0, 0]) do |(c, d), op|
        root = op.operation_type == "mutation" ? schema.mutation : query_type
        oc, od = walk.call(op.selections, root)
        [c + oc, [d, od].max]
      end
    end

    # The first limit the document breaks, as a message, or nil.
    def refusal(doc, variables, config)
      max_fields = config["graphql_max_fields"]
      fields = count_fields(doc)
      return "the query selects #{fields} fields (aliases included); at most #{max_fields} are allowed" if fields > max_fields

      spread = count_spread_fields(doc)
      if spread > max_fields
        return "the query selects #{spread} fields once its fragments are spread (aliases included); " \
               "at most #{max_fields} are allowed"
      end
      hashes = count_hashes(doc, variables)
      if hashes > config["graphql_max_hashes"]
        return [:hashes, "the query asks for #{hashes} password hashes (verifyPassword, createUser, " \
                         "updateUser with a password; aliases included); at most #{config['graphql_max_hashes']} " \
                         "are allowed in one request, so send the rest in further requests"]
      end
      complexity, depth = complexity_and_depth(doc, StacklabSchema)
      return "Query is too complex." if complexity > config["graphql_max_complexity"]
      return "Query is nested too deep." if depth > config["graphql_max_depth"]

      nil
    end
  end
end
