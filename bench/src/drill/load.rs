//! Steady load under a fault: workers sending GETs and POSTs, every outcome recorded (`Load`, `Tally`).

use super::*;

/// One request's outcome under load.
#[derive(Debug, Clone)]
pub struct Rec {
    /// Milliseconds since the load started, when the request was sent.
    pub at_ms: u64,
    pub post: bool,
    /// The status, or `None` when no HTTP answer came.
    pub status: Option<u16>,
    pub json_error: bool,
    pub error: Option<String>,
}

impl Rec {
    pub fn failed(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }
}

/// A steady closed-loop load: `gets` workers sending `GET /api/users?limit=5` and `posts`
/// workers sending `POST /api/users`, over the sessions in turn, each on its own keep-alive
/// connection, for `seconds`.
pub struct Load {
    pub started: Instant,
    pub(super) task: tokio::task::JoinHandle<Vec<Rec>>,
    pub resent: Arc<AtomicU64>,
}

/// What a load's records add up to.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub sent: usize,
    pub ok: usize,
    pub failed_get: usize,
    pub failed_post: usize,
    /// Failed POSTs answered with a JSON error body (a clear 502/503/504).
    pub failed_post_json: usize,
    /// 4xx answers (not failures of the system, but not expected either).
    pub client_errors: usize,
    pub first_failure: Option<String>,
}

impl Tally {
    pub fn of<'a>(recs: impl IntoIterator<Item = &'a Rec>) -> Tally {
        let mut t = Tally::default();
        for r in recs {
            t.sent += 1;
            match r.status {
                Some(s) if s < 400 => t.ok += 1,
                Some(s) if s < 500 => {
                    t.client_errors += 1;
                    t.first_failure.get_or_insert_with(|| {
                        format!("{} {s}", if r.post { "POST" } else { "GET" })
                    });
                }
                _ => {
                    if r.post {
                        t.failed_post += 1;
                        if r.json_error {
                            t.failed_post_json += 1;
                        }
                    } else {
                        t.failed_get += 1;
                    }
                    t.first_failure.get_or_insert_with(|| {
                        format!(
                            "{} at {} ms: {}",
                            if r.post { "POST" } else { "GET" },
                            r.at_ms,
                            r.status
                                .map(|s| s.to_string())
                                .or_else(|| r.error.clone())
                                .unwrap_or_default()
                        )
                    });
                }
            }
        }
        t
    }

    pub fn failed(&self) -> usize {
        self.failed_get + self.failed_post
    }
}

impl Load {
    pub fn start(edge: &Edge, codes: &[String], gets: usize, posts: usize, seconds: f64) -> Load {
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(seconds);
        let resent = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        for w in 0..gets + posts {
            let (edge, codes) = (edge.clone(), codes.to_vec());
            let resent = Arc::clone(&resent);
            let post = w >= gets;
            set.spawn(async move { worker(edge, codes, w, post, started, end, resent).await });
        }
        let task = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(r) = set.join_next().await {
                all.extend(r.unwrap_or_default());
            }
            all.sort_by_key(|r| r.at_ms);
            all
        });
        Load {
            started,
            task,
            resent,
        }
    }

    /// Milliseconds since the load started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Sleeps until `frac` of `seconds` has passed.
    pub async fn until(&self, seconds: f64, frac: f64) {
        tokio::time::sleep_until(self.started + Duration::from_secs_f64(seconds * frac)).await;
    }

    pub async fn finish(self) -> Vec<Rec> {
        self.task.await.unwrap_or_default()
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn worker(
    edge: Edge,
    codes: Vec<String>,
    w: usize,
    post: bool,
    started: Instant,
    end: Instant,
    resent: Arc<AtomicU64>,
) -> Vec<Rec> {
    let mut recs = Vec::new();
    let mut conn: Option<Send1> = None;
    let mut k = 0usize;
    while Instant::now() < end {
        let code = &codes[(w + k) % codes.len()];
        k += 1;
        let at_ms = started.elapsed().as_millis() as u64;
        let body = post.then(|| {
            json!({"username": format!("w{w}n{k}"), "email": format!("w{w}n{k}@example.com"), "password": "drill password"})
                .to_string()
        });
        let (method, path) = if post {
            ("POST", "/api/users")
        } else {
            ("GET", "/api/users?limit=5")
        };
        let result = tokio::time::timeout(
            REQUEST_TIMEOUT,
            send(&edge, &mut conn, method, path, code, body, &resent),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
        let rec = match result {
            Ok(r) => Rec {
                at_ms,
                post,
                status: Some(r.status),
                json_error: r.is_json_error(),
                error: None,
            },
            Err(e) => {
                conn = None;
                Rec {
                    at_ms,
                    post,
                    status: None,
                    json_error: false,
                    error: Some(format!("{e:#}")),
                }
            }
        };
        recs.push(rec);
    }
    recs
}

/// Sends on the worker's connection, reconnecting when the server closed it, and resending
/// once a request hyper never wrote (what any HTTP client does).
pub(super) async fn send(
    edge: &Edge,
    conn: &mut Option<Send1>,
    method: &str,
    path: &str,
    code: &str,
    body: Option<String>,
    resent: &AtomicU64,
) -> anyhow::Result<Resp> {
    let mut req = request(edge.addr, method, path, Some(code), body)?;
    for attempt in 0..2 {
        let mut s = match conn.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => edge.connect().await?,
            },
            None => edge.connect().await?,
        };
        match s.try_send_request(req).await {
            Ok(res) => {
                let r = read(res).await?;
                let close = r
                    .headers
                    .get("connection")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                if !close {
                    *conn = Some(s);
                }
                return Ok(r);
            }
            Err(mut e) => match e.take_message() {
                Some(back) if attempt == 0 => {
                    resent.fetch_add(1, Relaxed);
                    req = back;
                }
                _ => return Err(e.into_error().into()),
            },
        }
    }
    bail!("the request could not be sent twice")
}

/// Load workers: GETs and POSTs.
pub(super) const GETS: usize = 8;
pub(super) const POSTS: usize = 2;
/// Cheap choices, so the load measures the system and not password hashing.
pub(super) fn cheap() -> Value {
    json!({"password_storage": "sha256", "cache": "memory"})
}
