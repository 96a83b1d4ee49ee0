//! GraphQL over the same service as REST: queries `users(q, limit, offset)` and `user(id)`,
//! mutations `createUser`, `updateUser`, `deleteUser`, `verifyPassword`.
//!
//! Depth and complexity are limited so one query cannot fan out without end (an alias bomb
//! asking for `users` a thousand times is refused before it runs). Errors carry the REST
//! error's `code` and `field` in `extensions`.

use crate::error::ApiError;
use crate::service::{CreateUser, Page, Session, Trace, UpdateUser, User};
use async_graphql::{
    Context, EmptySubscription, ErrorExtensions, InputObject, Object, Schema, SimpleObject,
};
use std::sync::Arc;

/// Nesting depth a query may have.
pub const MAX_DEPTH: usize = 6;
/// Complexity (fields, with lists weighted) a query may have.
pub const MAX_COMPLEXITY: usize = 200;

pub type UsersSchema = Schema<Query, Mutation, EmptySubscription>;

pub fn schema() -> UsersSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
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

/// The GraphiQL page for `GET /graphql`.
pub fn graphiql() -> String {
    async_graphql::http::GraphiQLSource::build()
        .endpoint("/graphql")
        .finish()
}
