//! GraphQL over the same service as REST: queries `users(q, limit, offset)` and `user(id)`,
//! mutations `createUser`, `updateUser`, `deleteUser`, `verifyPassword`.
//!
//! Depth, complexity and the number of fields are limited so one query cannot fan out without
//! end (an alias bomb asking for `users` a thousand times is refused before it runs, and so is
//! one asking for `__typename` thousands of times, which complexity does not count), and so is
//! one asking for more password hashes (`verifyPassword`, `createUser`, an `updateUser` that
//! sets a password) than `graphql_max_hashes`, each being tens of milliseconds of CPU
//! ([`crate::guard`]). Errors
//! carry the REST error's `code` and `field` in `extensions`; a request refused before anything
//! ran is answered `400` by the HTTP layer.

use crate::error::ApiError;
use crate::service::{CreateUser, Page, Session, Trace, UpdateUser, User};
use async_graphql::{
    Context, EmptySubscription, ErrorExtensions, InputObject, Object, Schema, SimpleObject,
};
use std::sync::Arc;

pub type UsersSchema = Schema<Query, Mutation, EmptySubscription>;

/// The schema with the limits of `backend.graphql_max_depth`, `graphql_max_complexity`,
/// `graphql_max_fields` (field selections written out over all operations and fragments,
/// aliases and `__typename` included) and `graphql_max_hashes` (counted in `guards`).
pub fn schema(limits: &crate::config::Limits, guards: Arc<crate::guard::Guards>) -> UsersSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .limit_depth(limits.graphql_max_depth)
        .limit_complexity(limits.graphql_max_complexity)
        .extension(FieldLimit(Arc::new(DocumentLimits {
            max_fields: limits.graphql_max_fields,
            max_hashes: limits.graphql_max_hashes,
            guards,
        })))
        .finish()
}

/// What a document may write out, checked as soon as it is parsed: field selections
/// (complexity does not count introspection fields such as `__typename`) and hashing fields.
#[derive(Debug)]
struct DocumentLimits {
    max_fields: usize,
    max_hashes: usize,
    guards: Arc<crate::guard::Guards>,
}

struct FieldLimit(Arc<DocumentLimits>);

impl async_graphql::extensions::ExtensionFactory for FieldLimit {
    fn create(&self) -> Arc<dyn async_graphql::extensions::Extension> {
        Arc::new(FieldLimit(Arc::clone(&self.0)))
    }
}

#[async_trait::async_trait]
impl async_graphql::extensions::Extension for FieldLimit {
    // Checked as the request is prepared, on the document parsed here (and kept for the
    // schema), before async-graphql's own recursion-depth check: that check walks fragment
    // spreads without memo, so a fragment bomb would cost it exponential time first.
    async fn prepare_request(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        request: async_graphql::Request,
        next: async_graphql::extensions::NextPrepareRequest<'_>,
    ) -> async_graphql::ServerResult<async_graphql::Request> {
        let mut request = next.run(ctx, request).await?;
        let variables = request.variables.clone();
        let variables = &variables;
        let doc = request.parsed_query()?;
        let fields = doc
            .operations
            .iter()
            .map(|(_, op)| count_fields(&op.node.selection_set.node))
            .chain(
                doc.fragments
                    .values()
                    .map(|f| count_fields(&f.node.selection_set.node)),
            )
            .sum::<usize>();
        if fields > self.0.max_fields {
            return Err(async_graphql::ServerError::new(
                format!(
                    "the query selects {fields} fields (aliases included); at most {} are allowed",
                    self.0.max_fields
                ),
                None,
            ));
        }
        let hashes = doc
            .operations
            .iter()
            .map(|(_, op)| count_hashes(&op.node.selection_set.node, variables))
            .chain(
                doc.fragments
                    .values()
                    .map(|f| count_hashes(&f.node.selection_set.node, variables)),
            )
            .sum::<usize>();
        if hashes > self.0.max_hashes {
            self.0.guards.graphql_refused();
            return Err(async_graphql::ServerError::new(
                format!(
                    "the query asks for {hashes} password hashes (verifyPassword, createUser, \
                     updateUser with a password; aliases included); at most {} are allowed in \
                     one request, so send the rest in further requests",
                    self.0.max_hashes
                ),
                None,
            ));
        }
        // Fragments spread into one another multiply: 48 small fragments can stand for 2^24
        // selections, which the depth check and validation would walk one by one. Counted
        // spread out (each fragment once, memoized) and refused here, before either runs.
        let mut spread = Spread {
            fragments: &doc.fragments,
            counted: std::collections::HashMap::new(),
            open: std::collections::HashSet::new(),
        };
        let expanded = doc
            .operations
            .iter()
            .map(|(_, op)| spread.count(&op.node.selection_set.node))
            .fold(0usize, usize::saturating_add);
        if expanded > self.0.max_fields {
            return Err(async_graphql::ServerError::new(
                format!(
                    "the query selects {} fields once its fragments are spread (aliases included); at most {} are allowed",
                    if expanded == usize::MAX { "countless".to_owned() } else { expanded.to_string() },
                    self.0.max_fields
                ),
                None,
            ));
        }
        Ok(request)
    }
}

/// Fields that hash a password, written out in a selection set (nested ones included). An
/// `updateUser` counts when its input sets a password, inline or through variables; one whose
/// variable is not given (a default in the document) counts, to be safe.
fn count_hashes(
    set: &async_graphql::parser::types::SelectionSet,
    variables: &async_graphql::Variables,
) -> usize {
    use async_graphql::parser::types::Selection;
    use async_graphql_value::{ConstValue, Value};
    let given = |v: &async_graphql::Name| !matches!(variables.get(v), Some(ConstValue::Null));
    let sets_password =
        |f: &async_graphql::parser::types::Field| match f.get_argument("input").map(|v| &v.node) {
            Some(Value::Object(input)) => match input.get("password") {
                None | Some(Value::Null) => false,
                Some(Value::Variable(v)) => given(v),
                Some(_) => true,
            },
            Some(Value::Variable(v)) => match variables.get(v) {
                None => true,
                Some(ConstValue::Object(input)) => {
                    !matches!(input.get("password"), None | Some(ConstValue::Null))
                }
                Some(_) => false,
            },
            _ => false,
        };
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => {
                let own = match f.node.name.node.as_str() {
                    "verifyPassword" | "createUser" => 1,
                    "updateUser" => usize::from(sets_password(&f.node)),
                    _ => 0,
                };
                own + count_hashes(&f.node.selection_set.node, variables)
            }
            Selection::InlineFragment(i) => count_hashes(&i.node.selection_set.node, variables),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// Field selections written out in a selection set, nested ones included (the parser bounds
/// the nesting, so the recursion is bounded too).
fn count_fields(set: &async_graphql::parser::types::SelectionSet) -> usize {
    use async_graphql::parser::types::Selection;
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => 1 + count_fields(&f.node.selection_set.node),
            Selection::InlineFragment(i) => count_fields(&i.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// Field selections of a selection set with its fragment spreads spread out; each fragment is
/// counted once. A spread of a fragment being counted (a cycle) counts 0: validation refuses
/// cycles with its own error.
struct Spread<'a> {
    fragments: &'a std::collections::HashMap<
        async_graphql::Name,
        async_graphql::Positioned<async_graphql::parser::types::FragmentDefinition>,
    >,
    counted: std::collections::HashMap<async_graphql::Name, usize>,
    open: std::collections::HashSet<async_graphql::Name>,
}

impl Spread<'_> {
    fn count(&mut self, set: &async_graphql::parser::types::SelectionSet) -> usize {
        use async_graphql::parser::types::Selection;
        set.items
            .iter()
            .map(|s| match &s.node {
                Selection::Field(f) => {
                    1usize.saturating_add(self.count(&f.node.selection_set.node))
                }
                Selection::InlineFragment(i) => self.count(&i.node.selection_set.node),
                Selection::FragmentSpread(f) => self.fragment(&f.node.fragment_name.node),
            })
            .fold(0, usize::saturating_add)
    }

    fn fragment(&mut self, name: &async_graphql::Name) -> usize {
        if let Some(n) = self.counted.get(name) {
            return *n;
        }
        let fragments = self.fragments;
        let Some(def) = fragments.get(name) else {
            return 0;
        };
        if !self.open.insert(name.clone()) {
            return 0;
        }
        let n = self.count(&def.node.selection_set.node);
        self.open.remove(name);
        self.counted.insert(name.clone(), n);
        n
    }
}

#[derive(SimpleObject)]
#[graphql(name = "User")]
struct GqlUser {
    id: i64,
    username: String,
    email: String,
    full_name: String,
    stored_password: String,
    stored_email: String,
    created_at: i64,
    updated_at: i64,
}

impl From<User> for GqlUser {
    fn from(u: User) -> Self {
        GqlUser {
            id: u.id,
            username: u.username,
            email: u.email,
            full_name: u.full_name,
            stored_password: u.stored_password,
            stored_email: u.stored_email,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "UserPage")]
struct GqlPage {
    items: Vec<GqlUser>,
    total: i64,
    limit: i64,
    offset: i64,
}

impl From<Page> for GqlPage {
    fn from(p: Page) -> Self {
        GqlPage {
            items: p.items.into_iter().map(Into::into).collect(),
            total: p.total,
            limit: p.limit,
            offset: p.offset,
        }
    }
}

#[derive(InputObject)]
struct CreateUserInput {
    username: String,
    email: String,
    password: String,
    full_name: Option<String>,
}

#[derive(InputObject)]
struct UpdateUserInput {
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
    full_name: Option<String>,
}

fn gql_err(e: ApiError) -> async_graphql::Error {
    let body = e.body();
    async_graphql::Error::new(body.error.message).extend_with(|_, ext| {
        ext.set("code", body.error.code.clone());
        if let Some(f) = &body.error.field {
            ext.set("field", f.clone());
        }
    })
}

fn parts<'a>(ctx: &'a Context<'_>) -> (&'a Arc<Session>, &'a Arc<Trace>) {
    (
        ctx.data_unchecked::<Arc<Session>>(),
        ctx.data_unchecked::<Arc<Trace>>(),
    )
}

pub struct Query;

#[Object]
impl Query {
    /// Users whose username (or email) contains `q`, case-insensitive; a page of them.
    #[graphql(complexity = "10 * child_complexity")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        q: Option<String>,
        limit: Option<i64>,
        offset: Option<i64>,
    ) -> async_graphql::Result<GqlPage> {
        let (s, t) = parts(ctx);
        s.list(q.as_deref(), limit, offset, t)
            .await
            .map(Into::into)
            .map_err(gql_err)
    }

    async fn user(&self, ctx: &Context<'_>, id: i64) -> async_graphql::Result<GqlUser> {
        let (s, t) = parts(ctx);
        s.get(id, t).await.map(Into::into).map_err(gql_err)
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        input: CreateUserInput,
    ) -> async_graphql::Result<GqlUser> {
        let (s, t) = parts(ctx);
        let input = CreateUser {
            username: input.username,
            email: input.email,
            password: input.password,
            full_name: input.full_name,
        };
        s.create(input, t).await.map(Into::into).map_err(gql_err)
    }

    async fn update_user(
        &self,
        ctx: &Context<'_>,
        id: i64,
        input: UpdateUserInput,
    ) -> async_graphql::Result<GqlUser> {
        let (s, t) = parts(ctx);
        let input = UpdateUser {
            username: input.username,
            email: input.email,
            password: input.password,
            full_name: input.full_name,
        };
        s.update(id, input, t)
            .await
            .map(Into::into)
            .map_err(gql_err)
    }

    async fn delete_user(&self, ctx: &Context<'_>, id: i64) -> async_graphql::Result<bool> {
        let (s, t) = parts(ctx);
        s.delete(id, t).await.map(|()| true).map_err(gql_err)
    }

    async fn verify_password(
        &self,
        ctx: &Context<'_>,
        id: i64,
        password: String,
    ) -> async_graphql::Result<bool> {
        let (s, t) = parts(ctx);
        s.verify_password(id, &password, t).await.map_err(gql_err)
    }
}

#[cfg(test)]
mod tests {
    /// 82 fragments standing for 2^40 selections: refused by the field limit at once, before
    /// async-graphql's own depth check would walk them.
    #[tokio::test]
    async fn fragment_bombs_are_refused_before_anything_walks_them() {
        let limits = crate::config::Limits::default();
        let schema = super::schema(&limits, crate::guard::Guards::new(&limits));
        let mut q = String::from("{ ...A0 }\n");
        for i in 0..40 {
            q += &format!(
                "fragment A{i} on Query {{ ...A{n} ...B{n} }}\nfragment B{i} on Query {{ ...A{n} ...B{n} }}\n",
                n = i + 1
            );
        }
        q += "fragment A40 on Query { __typename }\nfragment B40 on Query { __typename }\n";
        let started = std::time::Instant::now();
        let res = schema.execute(q.as_str()).await;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(
            res.errors[0]
                .message
                .contains("1099511627776 fields once its fragments are spread"),
            "{:?}",
            res.errors
        );
        // A fragment spread twice counts twice; a cycle is left to async-graphql's own checks.
        let res = schema
            .execute("{ ...F ...F } fragment F on Query { __typename }")
            .await;
        assert!(res.errors.is_empty(), "{:?}", res.errors);
        let res = schema
            .execute(
                "{ ...A } fragment A on Query { __typename ...B } fragment B on Query { ...A }",
            )
            .await;
        assert!(
            !res.errors.is_empty() && res.data == async_graphql::Value::Null,
            "{:?}",
            res.errors
        );
    }
}
