// The console's requests, per protocol, and reading their answers back.
//
// REST: /api/users…; GraphQL: POST /graphql with the backend's schema (async-graphql renames
// fields to camelCase: fullName, storedPassword, storedEmail, createdAt, updatedAt; ids are Int;
// inputs are CreateUserInput {username, email, password, fullName} and UpdateUserInput with
// every field optional). Users from either come back in the REST shape (snake_case).
// Pure, unit-tested in web/tests/users.test.js.

export const GQL_USER_FIELDS = "id username email fullName storedPassword storedEmail createdAt updatedAt";

export const GQL = {
  search: `query Users($q: String, $limit: Int, $offset: Int) {
  users(q: $q, limit: $limit, offset: $offset) {
    total limit offset
    items { ${GQL_USER_FIELDS} }
  }
}`,
  get: `query User($id: Int!) {
  user(id: $id) { ${GQL_USER_FIELDS} }
}`,
  create: `mutation CreateUser($input: CreateUserInput!) {
  createUser(input: $input) { ${GQL_USER_FIELDS} }
}`,
  update: `mutation UpdateUser($id: Int!, $input: UpdateUserInput!) {
  updateUser(id: $id, input: $input) { ${GQL_USER_FIELDS} }
}`,
  delete: `mutation DeleteUser($id: Int!) {
  deleteUser(id: $id)
}`,
  verify: `mutation VerifyPassword($id: Int!, $password: String!) {
  verifyPassword(id: $id, password: $password)
}`,
};

const GQL_ROOT = {
  search: "users",
  get: "user",
  create: "createUser",
  update: "updateUser",
  delete: "deleteUser",
  verify: "verifyPassword",
};

const REST_TO_GQL = { full_name: "fullName" };

function trimmed(v) {
  return typeof v === "string" ? v.trim() : v;
}

/** Only the fields a person filled in; full_name may be sent empty to clear it on update. */
function userInput(args, { keepEmpty = [] } = {}) {
  const out = {};
  for (const k of ["username", "email", "password", "full_name"]) {
    const v = k === "password" ? args[k] : trimmed(args[k]);
    if (typeof v !== "string") continue;
    if (v === "" && !keepEmpty.includes(k)) continue;
    out[k] = v;
  }
  return out;
}

function toGqlInput(input) {
  const out = {};
  for (const [k, v] of Object.entries(input)) out[REST_TO_GQL[k] || k] = v;
  return out;
}

function positiveInt(v) {
  const n = typeof v === "number" ? v : Number(String(v ?? "").trim());
  return Number.isInteger(n) && n > 0 ? n : null;
}

function optionalInt(v) {
  if (v === undefined || v === null || String(v).trim() === "") return undefined;
  const n = Number(String(v).trim());
  return Number.isInteger(n) ? n : NaN;
}

/**
 * What to send for an action.
 * @param {"rest"|"graphql"} protocol
 * @param {"search"|"get"|"create"|"update"|"delete"|"verify"} action
 * @returns {{method: string, path: string, body?: object}}
 * @throws Error with `.field` when an argument is unusable (before anything is sent)
 */
export function buildRequest(protocol, action, args = {}) {
  const needId = () => {
    const id = positiveInt(args.id);
    if (id === null) {
      const e = new Error("choose a user first (their id is a positive whole number)");
      e.field = "id";
      throw e;
    }
    return id;
  };
  const page = () => {
    const limit = optionalInt(args.limit);
    const offset = optionalInt(args.offset);
    for (const [field, v] of [["limit", limit], ["offset", offset]]) {
      if (Number.isNaN(v)) {
        const e = new Error(`${field} must be a whole number`);
        e.field = field;
        throw e;
      }
    }
    const q = trimmed(args.q) || "";
    return { q, limit, offset };
  };

  if (protocol === "graphql") {
    let variables;
    switch (action) {
      case "search": {
        const { q, limit, offset } = page();
        variables = {};
        if (q) variables.q = q;
        if (limit !== undefined) variables.limit = limit;
        if (offset !== undefined) variables.offset = offset;
        break;
      }
      case "get":
      case "delete":
        variables = { id: needId() };
        break;
      case "create":
        variables = { input: toGqlInput(userInput(args)) };
        break;
      case "update":
        variables = { id: needId(), input: toGqlInput(userInput(args, { keepEmpty: ["full_name"] })) };
        break;
      case "verify":
        variables = { id: needId(), password: typeof args.password === "string" ? args.password : "" };
        break;
      default:
        throw new Error(`unknown action ${action}`);
    }
    return { method: "POST", path: "/graphql", body: { query: GQL[action], variables } };
  }

  switch (action) {
    case "search": {
      const { q, limit, offset } = page();
      const params = new URLSearchParams();
      params.set("q", q);
      if (limit !== undefined) params.set("limit", String(limit));
      if (offset !== undefined) params.set("offset", String(offset));
      return { method: "GET", path: `/api/users?${params.toString()}` };
    }
    case "get":
      return { method: "GET", path: `/api/users/${needId()}` };
    case "create":
      return { method: "POST", path: "/api/users", body: userInput(args) };
    case "update":
      return { method: "PATCH", path: `/api/users/${needId()}`, body: userInput(args, { keepEmpty: ["full_name"] }) };
    case "delete":
      return { method: "DELETE", path: `/api/users/${needId()}` };
    case "verify":
      return {
        method: "POST",
        path: `/api/users/${needId()}/verify-password`,
        body: { password: typeof args.password === "string" ? args.password : "" },
      };
    default:
      throw new Error(`unknown action ${action}`);
  }
}

/** A user in the REST shape, whichever protocol it came from. */
export function normalizeUser(u) {
  if (!u || typeof u !== "object") return null;
  const pick = (snake, camel) => (u[snake] !== undefined ? u[snake] : u[camel]);
  return {
    ...u,
    id: u.id,
    username: u.username ?? "",
    email: u.email ?? "",
    full_name: pick("full_name", "fullName") ?? "",
    stored_password: pick("stored_password", "storedPassword") ?? "",
    stored_email: pick("stored_email", "storedEmail"),
    created_at: pick("created_at", "createdAt"),
    updated_at: pick("updated_at", "updatedAt"),
  };
}

/** A list answer: an array, or an object holding "users" or "items" (and maybe "total"). */
export function normalizeUserList(body) {
  let list = [];
  let total = null;
  if (Array.isArray(body)) list = body;
  else if (body && typeof body === "object") {
    if (Array.isArray(body.users)) list = body.users;
    else if (Array.isArray(body.items)) list = body.items;
    else if (Array.isArray(body.data)) list = body.data;
    if (typeof body.total === "number") total = body.total;
  }
  const users = list.map(normalizeUser).filter(Boolean);
  return { users, total: total ?? users.length };
}

/**
 * What an answer means for an action.
 * @returns {{users?, total?, user?, verified?, deleted?}} the REST-shaped result; the caller
 *   deals with errors (see errors.js) before calling this.
 */
export function readResult(protocol, action, body) {
  let value = body;
  if (protocol === "graphql") {
    value = body && body.data ? body.data[GQL_ROOT[action]] : undefined;
  }
  switch (action) {
    case "search":
      return normalizeUserList(value);
    case "get":
    case "create":
    case "update":
      return { user: normalizeUser(value) };
    case "delete":
      return { deleted: protocol === "graphql" ? value === true : value?.deleted !== false };
    case "verify":
      return { verified: protocol === "graphql" ? value === true : value?.ok === true };
    default:
      return {};
  }
}

/** The request as a person reads it: "POST /api/users" and the body, or the GraphQL text. */
export function describeRequest(req) {
  const line = `${req.method} ${req.path}`;
  if (!req.body) return { line, body: "" };
  if (req.path === "/graphql" && typeof req.body.query === "string") {
    const vars = req.body.variables && Object.keys(req.body.variables).length > 0
      ? `\n\nvariables: ${JSON.stringify(maskPasswords(req.body.variables), null, 2)}`
      : "";
    return { line, body: req.body.query + vars };
  }
  return { line, body: JSON.stringify(maskPasswords(req.body), null, 2) };
}

/** Passwords shown as typed would end up in screenshots: they are masked in what is shown. */
export function maskPasswords(value) {
  if (Array.isArray(value)) return value.map(maskPasswords);
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = /password/i.test(k) && typeof v === "string" ? "•".repeat(Math.min(v.length, 12)) : maskPasswords(v);
    }
    return out;
  }
  return value;
}
