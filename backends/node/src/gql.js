'use strict';
// GraphQL over the same service as REST (CONTRACT.md §7), on graphql-js 16. The schema is the
// contract's, field for field, with its 64-bit `Int` (createdAt is Unix milliseconds, beyond
// GraphQL's usual 32 bits): a scalar of our own named Int replaces the standard one, which
// appears nowhere in this schema. These limits are checked before anything runs (validation
// included), in the contract's order and with its counting rules:
//
// 1. fields written out in the document (aliases and __typename included; a fragment's fields
//    counted once, where it is defined) <= graphqlMaxFields;
// 2. fields once the operations' fragments are spread <= graphqlMaxFields (a fragment bomb of
//    2^24 selections is refused here, having cost one pass over the document);
// 3. password hashes (verifyPassword, createUser, updateUser setting a password) <= graphqlMaxHashes;
// 4. complexity <= graphqlMaxComplexity: a field costs 1 + its children, `users` 10 x its
//    children, __typename nothing;
// 5. depth <= graphqlMaxDepth: the longest chain of nested fields (__typename not counted).
//
// Every count takes each fragment once and remembers its result, so counting is linear in the
// size of the document whatever it spreads; a spread inside a cycle counts 0 (validation then
// refuses the cycle with its own error).

const {
  GraphQLBoolean, GraphQLError, GraphQLInputObjectType, GraphQLList, GraphQLNonNull,
  GraphQLObjectType, GraphQLScalarType, GraphQLSchema, GraphQLString, Kind, execute,
  getNamedType, parse, validate,
} = require('graphql');
const { ApiError } = require('./errors');

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

function int64(value) {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new GraphQLError(`Int cannot represent value: ${JSON.stringify(value)} (a 64-bit whole number is expected)`);
  }
  return value;
}

const Int = new GraphQLScalarType({
  name: 'Int',
  description: 'A 64-bit signed whole number.',
  serialize: int64,
  parseValue: int64,
  parseLiteral(node) {
    if (node.kind !== Kind.INT) throw new GraphQLError('Int cannot represent a non-integer value', { nodes: node });
    const big = BigInt(node.value);
    if (big < I64_MIN || big > I64_MAX) throw new GraphQLError(`Int cannot represent value: ${node.value} (a 64-bit whole number is expected)`, { nodes: node });
    // Beyond 2^53 the nearest double: no id, limit or offset is that large, so such a value
    // finds nothing (or is refused) as it would in a runtime with exact 64-bit integers.
    return Number(big);
  },
});

const nn = (t) => new GraphQLNonNull(t);

function apiError(e) {
  const extensions = { code: e.code };
  if (e.field !== undefined && e.field !== null) extensions.field = e.field;
  return new GraphQLError(e.message, { extensions });
}

// Runs a service call with the request's session and trace; errors become GraphQL errors with
// the REST error's message, code and field (never an internal detail).
function resolver(fn) {
  return async (_root, args, ctx, info) => {
    try {
      return await fn(ctx.session, ctx.trace, args);
    } catch (e) {
      if (e instanceof ApiError) {
        if (e.status >= 500) console.error(`GraphQL field ${info.fieldName} failed: ${e.detail || e.message}`);
        throw apiError(e);
      }
      if (e instanceof GraphQLError) throw e;
      console.error(`GraphQL field ${info.fieldName} failed:`, e);
      throw apiError(ApiError.internal('resolver'));
    }
  };
}

const field = (type, key) => ({ type, resolve: (u) => u[key] });

const User = new GraphQLObjectType({
  name: 'User',
  fields: () => ({
    id: field(nn(Int), 'id'),
    username: field(nn(GraphQLString), 'username'),
    email: field(nn(GraphQLString), 'email'),
    fullName: field(nn(GraphQLString), 'full_name'),
    storedPassword: field(nn(GraphQLString), 'stored_password'),
    storedEmail: field(nn(GraphQLString), 'stored_email'),
    createdAt: field(nn(Int), 'created_at'),
    updatedAt: field(nn(Int), 'updated_at'),
  }),
});

const UserPage = new GraphQLObjectType({
  name: 'UserPage',
  fields: () => ({
    items: field(nn(new GraphQLList(nn(User))), 'items'),
    total: field(nn(Int), 'total'),
    limit: field(nn(Int), 'limit'),
    offset: field(nn(Int), 'offset'),
  }),
});

const CreateUserInput = new GraphQLInputObjectType({
  name: 'CreateUserInput',
  fields: { username: { type: nn(GraphQLString) }, email: { type: nn(GraphQLString) }, password: { type: nn(GraphQLString) }, fullName: { type: GraphQLString } },
});

const UpdateUserInput = new GraphQLInputObjectType({
  name: 'UpdateUserInput',
  fields: { username: { type: GraphQLString }, email: { type: GraphQLString }, password: { type: GraphQLString }, fullName: { type: GraphQLString } },
});

const Query = new GraphQLObjectType({
  name: 'Query',
  fields: {
    users: {
      type: nn(UserPage),
      description: 'Users whose username (or email) contains `q`, case-insensitive; a page of them.',
      args: { q: { type: GraphQLString }, limit: { type: Int }, offset: { type: Int } },
      resolve: resolver((s, t, a) => s.list(a.q, a.limit, a.offset, t)),
    },
    user: { type: nn(User), args: { id: { type: nn(Int) } }, resolve: resolver((s, t, a) => s.get(a.id, t)) },
  },
});

const Mutation = new GraphQLObjectType({
  name: 'Mutation',
  fields: {
    createUser: {
      type: nn(User),
      args: { input: { type: nn(CreateUserInput) } },
      resolve: resolver((s, t, { input }) => s.create(input.username, input.email, input.password, input.fullName, t)),
    },
    updateUser: {
      type: nn(User),
      args: { id: { type: nn(Int) }, input: { type: nn(UpdateUserInput) } },
      resolve: resolver((s, t, { id, input }) => s.update(id, {
        username: input.username, email: input.email, password: input.password, full_name: input.fullName,
      }, t)),
    },
    deleteUser: { type: nn(GraphQLBoolean), args: { id: { type: nn(Int) } }, resolve: resolver(async (s, t, a) => { await s.delete(a.id, t); return true; }) },
    verifyPassword: {
      type: nn(GraphQLBoolean),
      args: { id: { type: nn(Int) }, password: { type: nn(GraphQLString) } },
      resolve: resolver((s, t, a) => s.verifyPassword(a.id, a.password, t)),
    },
  },
});

const schema = new GraphQLSchema({ query: Query, mutation: Mutation });

// --- the limits ------------------------------------------------------------------------------

const COUNTLESS = 2 ** 64 - 1; // where a spread-out count stops being a number worth printing

const fragmentsOf = (doc) => new Map(doc.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION).map((d) => [d.name.value, d]));
const countable = (d) => d.kind === Kind.OPERATION_DEFINITION || d.kind === Kind.FRAGMENT_DEFINITION;
const selections = (s) => (s ? s.selections : []);

// Field selections written out; a spread counts 0.
function countFields(doc) {
  const count = (s) => selections(s).reduce((n, sel) => {
    if (sel.kind === Kind.FIELD) return n + 1 + count(sel.selectionSet);
    if (sel.kind === Kind.INLINE_FRAGMENT) return n + count(sel.selectionSet);
    return n;
  }, 0);
  return doc.definitions.filter(countable).reduce((n, d) => n + count(d.selectionSet), 0);
}

// Fields that hash a password (CONTRACT.md §9a), over every operation and fragment.
function countHashes(doc, variables) {
  const vars = variables && typeof variables === 'object' ? variables : {};
  const setsPassword = (f) => {
    const arg = (f.arguments || []).find((a) => a.name.value === 'input');
    if (!arg) return false;
    const v = arg.value;
    if (v.kind === Kind.OBJECT) {
      const p = v.fields.find((x) => x.name.value === 'password');
      if (!p || p.value.kind === Kind.NULL) return false;
      if (p.value.kind === Kind.VARIABLE) {
        const name = p.value.name.value;
        return !(name in vars) || (vars[name] !== null && vars[name] !== undefined);
      }
      return true;
    }
    if (v.kind === Kind.VARIABLE) {
      const name = v.name.value;
      if (!(name in vars)) return true;
      const given = vars[name];
      return given !== null && typeof given === 'object' && given.password !== null && given.password !== undefined;
    }
    return false;
  };
  const count = (s) => selections(s).reduce((n, sel) => {
    if (sel.kind === Kind.FIELD) {
      const name = sel.name.value;
      const own = name === 'verifyPassword' || name === 'createUser' ? 1 : name === 'updateUser' && setsPassword(sel) ? 1 : 0;
      return n + own + count(sel.selectionSet);
    }
    if (sel.kind === Kind.INLINE_FRAGMENT) return n + count(sel.selectionSet);
    return n;
  }, 0);
  return doc.definitions.filter(countable).reduce((n, d) => n + count(d.selectionSet), 0);
}

// Field selections of every operation with its fragment spreads spread out.
function countSpreadFields(doc) {
  const fragments = fragmentsOf(doc);
  const counted = new Map();
  const open = new Set();
  const fragment = (name) => {
    if (counted.has(name)) return counted.get(name);
    const f = fragments.get(name);
    if (!f || open.has(name)) return 0;
    open.add(name);
    const n = Math.min(count(f.selectionSet), COUNTLESS);
    counted.set(name, n);
    open.delete(name);
    return n;
  };
  const count = (s) => selections(s).reduce((n, sel) => {
    if (sel.kind === Kind.FIELD) return n + 1 + count(sel.selectionSet);
    if (sel.kind === Kind.INLINE_FRAGMENT) return n + count(sel.selectionSet);
    if (sel.kind === Kind.FRAGMENT_SPREAD) return n + fragment(sel.name.value);
    return n;
  }, 0);
  const total = doc.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION).reduce((n, d) => n + count(d.selectionSet), 0);
  return Math.min(total, COUNTLESS);
}

// async-graphql's numbers over every operation, fragments inlined, __typename not visited.
function complexityAndDepth(doc) {
  const fragments = fragmentsOf(doc);
  const known = new Map();
  const open = new Set();
  const walk = (s, parent) => {
    let total = 0;
    let depth = 0;
    for (const sel of selections(s)) {
      if (sel.kind === Kind.FIELD) {
        const name = sel.name.value;
        if (name === '__typename') continue;
        const f = parent instanceof GraphQLObjectType ? parent.getFields()[name] : undefined;
        const child = f ? getNamedType(f.type) : null;
        const [c, below] = walk(sel.selectionSet, child);
        total += parent === Query && name === 'users' ? 10 * c : 1 + c;
        depth = Math.max(depth, 1 + below);
      } else if (sel.kind === Kind.INLINE_FRAGMENT) {
        const t = sel.typeCondition ? schema.getType(sel.typeCondition.name.value) : parent;
        const [c, d] = walk(sel.selectionSet, t);
        total += c;
        depth = Math.max(depth, d);
      } else if (sel.kind === Kind.FRAGMENT_SPREAD) {
        const [c, d] = fragment(sel.name.value);
        total += c;
        depth = Math.max(depth, d);
      }
    }
    return [total, depth];
  };
  const fragment = (name) => {
    if (known.has(name)) return known.get(name);
    const f = fragments.get(name);
    if (!f || open.has(name)) return [0, 0];
    open.add(name);
    const r = walk(f.selectionSet, schema.getType(f.typeCondition.name.value));
    known.set(name, r);
    open.delete(name);
    return r;
  };
  let complexity = 0;
  let maxDepth = 0;
  for (const d of doc.definitions) {
    if (d.kind !== Kind.OPERATION_DEFINITION) continue;
    const root = d.operation === 'query' ? Query : d.operation === 'mutation' ? Mutation : null;
    const [c, depth] = walk(d.selectionSet, root);
    complexity += c;
    maxDepth = Math.max(maxDepth, depth);
  }
  return [complexity, maxDepth];
}

const refused = (errors) => ({ refused: true, response: { data: null, errors: errors.map((e) => e.toJSON()) } });

// Runs one request: {refused, response}; `refused` answers 400 (CONTRACT.md §7).
async function run(limits, guards, query, operationName, variables, context) {
  let doc;
  try {
    doc = parse(query);
  } catch (e) {
    if (e instanceof GraphQLError) return refused([e]);
    if (e instanceof RangeError) return refused([new GraphQLError('the query is nested too deeply to be parsed')]);
    throw e;
  }
  let errors;
  try {
    const fields = countFields(doc);
    if (fields > limits.graphqlMaxFields) {
      return refused([new GraphQLError(`the query selects ${fields} fields (aliases included); at most ${limits.graphqlMaxFields} are allowed`)]);
    }
    const spread = countSpreadFields(doc);
    if (spread > limits.graphqlMaxFields) {
      return refused([new GraphQLError(`the query selects ${spread === COUNTLESS ? 'countless' : spread} fields once its fragments ` +
        `are spread (aliases included); at most ${limits.graphqlMaxFields} are allowed`)]);
    }
    const hashes = countHashes(doc, variables);
    if (hashes > limits.graphqlMaxHashes) {
      guards.graphqlRefused();
      return refused([new GraphQLError(`the query asks for ${hashes} password hashes (verifyPassword, createUser, ` +
        `updateUser with a password; aliases included); at most ${limits.graphqlMaxHashes} are allowed in one request, ` +
        'so send the rest in further requests')]);
    }
    const [complexity, depth] = complexityAndDepth(doc);
    if (complexity > limits.graphqlMaxComplexity) return refused([new GraphQLError('Query is too complex.')]);
    if (depth > limits.graphqlMaxDepth) return refused([new GraphQLError('Query is nested too deep.')]);
    errors = validate(schema, doc);
  } catch (e) {
    if (e instanceof RangeError) return refused([new GraphQLError('the query is nested too deeply to be checked')]);
    throw e;
  }
  if (errors.length) return refused(errors);
  const result = await execute({ schema, document: doc, contextValue: context, variableValues: variables, operationName });
  const errs = result.errors || [];
  if ((result.data === null || result.data === undefined) && errs.length && errs.every((e) => !e.path)) return refused(errs);
  const response = { data: result.data === undefined ? null : result.data };
  if (errs.length) response.errors = errs.map((e) => e.toJSON());
  return { refused: false, response };
}


module.exports = { run, schema, countFields, countSpreadFields, countHashes, complexityAndDepth };
