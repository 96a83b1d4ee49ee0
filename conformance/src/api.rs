//! An HTTP client for one session, talking to an instance as the proxy does: the session in
//! `x-stacklab-session`, a fresh `x-request-id` per request.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Any one request gets an answer within this, or the test fails saying which.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// An answer, its body parsed as JSON (a non-JSON body is kept as a JSON string).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
}

impl Answer {
    /// `x-stacklab-cache`: `hit`, `miss`, `bypass`, or empty.
    pub fn cache(&self) -> &str {
        self.header("x-stacklab-cache")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// `error.code` of the JSON error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    /// `error.field` of the JSON error body.
    pub fn field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }
    /// The body is the contract's JSON error: `{"error": {"code", "message", "field"?}}`.
    pub fn is_error_body(&self) -> bool {
        self.body["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
            && self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
    }
}

/// A client for one session on one instance (`session` `None`: no session header).
#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    session: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish()
    }
}

impl Api {
    pub fn new(base: &str, session: Option<&str>) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            base: base.trim_end_matches('/').to_owned(),
            session: session.map(str::to_owned),
        }
    }

    /// The same instance without a session header.
    pub fn anonymous(&self) -> Api {
        Api {
            session: None,
            ..self.clone()
        }
    }

    /// Any request, with extra headers.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("x-request-id", crate::unique("req-"));
        if let Some(s) = &self.session {
            req = req.header("x-stacklab-session", s);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).expect("a request");
        let what = format!("{method} {}{path}", self.base);
        let res = tokio::time::timeout(REQUEST_DEADLINE, async {
            let res = self
                .client
                .request(req)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let (parts, body) = res.into_parts();
            let bytes = body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{what}: the body: {e}"))
                .to_bytes();
            (parts, bytes)
        })
        .await;
        let (parts, bytes) =
            res.unwrap_or_else(|_| panic!("{what}: no answer within {REQUEST_DEADLINE:?}"));
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    /// A request with a content type (or none) and a body of any bytes.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Answer {
        match content_type {
            Some(ct) => {
                self.request(method, path, &[("content-type", ct)], body)
                    .await
            }
            None => self.request(method, path, &[], body).await,
        }
    }

    /// A request with a JSON body, or none.
    pub async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Answer {
        match body {
            Some(b) => {
                self.raw(method, path, Some("application/json"), b.to_string())
                    .await
            }
            None => self.raw(method, path, None, Bytes::new()).await,
        }
    }

    /// `POST /graphql`.
    pub async fn graphql(&self, query: &str, variables: serde_json::Value) -> Answer {
        self.call(
            "POST",
            "/graphql",
            Some(serde_json::json!({"query": query, "variables": variables})),
        )
        .await
    }
}
