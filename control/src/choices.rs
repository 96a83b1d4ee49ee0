//! What a person chooses for a session, checked field by field, and the options an install
//! offers (`GET /api/options`).

use serde::Serialize;
use serde_json::{json, Map, Value};
use stacklab_types::stack::{
    ApiProtocol, CacheEngine, DatabaseEngine, Encryption, PasswordStorage, WritePolicy,
};

/// One choice: its values in order (the first is the default) and what each means.
struct Field {
    name: &'static str,
    label: &'static str,
    description: &'static str,
    values: &'static [(&'static str, &'static str, &'static str)],
}

const FIELDS: &[Field] = &[
    Field {
        name: "runtime",
        label: "Runtime",
        description: "The server program that answers your API calls.",
        // The runtimes are this install's (`backends/*/runtime.toml`, [`crate::runtimes`]):
        // `options` lists them, and session creation checks the name.
        values: &[("rust", "", "")],
    },
    Field {
        name: "protocol",
        label: "API protocol",
        description: "How the console talks to your backend.",
        values: &[
            ("rest", "REST", "One URL per resource, HTTP verbs for actions, JSON bodies."),
            ("graphql", "GraphQL", "One endpoint; each request says exactly which fields it wants."),
        ],
    },
    Field {
        name: "transport",
        label: "Transport",
        description: "How your browser reaches the edge proxy. The edge offers HTTP/3 or withdraws it (Alt-Svc); your browser makes the final pick.",
        values: &[
            ("https", "HTTPS (HTTP/1.1 or HTTP/2)", "TLS over TCP; HTTP/2 multiplexes requests on one connection. The edge tells your browser not to use HTTP/3."),
            ("h3", "HTTP/3", "QUIC over UDP: no head-of-line blocking, faster handshakes. The edge advertises it; your browser switches once it has seen that."),
        ],
    },
    Field {
        name: "database",
        label: "Database",
        description: "Where your users are stored.",
        values: &[
            ("sqlite", "SQLite", "An embedded database in one file: no server at all."),
            ("postgres", "PostgreSQL", "A client-server relational database with strict SQL."),
            ("mysql", "MySQL / MariaDB", "The most widely deployed open-source relational database."),
            ("mongodb", "MongoDB", "A document database: JSON-like records, no fixed schema."),
        ],
    },
    Field {
        name: "cache",
        label: "Cache",
        description: "What answers repeated reads before the database is asked.",
        values: &[
            ("memory", "In-process", "A cache inside the backend's own memory: fastest, not shared."),
            ("redis", "Redis", "An in-memory data server with eviction policies and TTLs."),
            ("memcached", "Memcached", "A simple, fast, multi-threaded key-value cache (LRU)."),
            ("none", "No cache", "Every read goes to the database."),
        ],
    },
    Field {
        name: "cache_policy",
        label: "Eviction policy",
        description: "Which entries the cache drops when it is full.",
        values: &[
            ("lru", "LRU", "Least recently used first."),
            ("lfu", "LFU", "Least frequently used first."),
            ("fifo", "FIFO", "Oldest entry first, however often it is read."),
            ("ttl", "Shortest TTL", "The entry closest to expiring first."),
            ("allkeys-lru", "allkeys-lru", "Any key, least recently used first (approximated)."),
            ("allkeys-lfu", "allkeys-lfu", "Any key, least frequently used first."),
            ("allkeys-random", "allkeys-random", "Any key, at random."),
            ("volatile-lru", "volatile-lru", "Keys with a TTL, least recently used first."),
            ("volatile-lfu", "volatile-lfu", "Keys with a TTL, least frequently used first."),
            ("volatile-random", "volatile-random", "Keys with a TTL, at random."),
            ("volatile-ttl", "volatile-ttl", "Keys with a TTL, shortest TTL first."),
            ("noeviction", "noeviction", "Nothing is evicted: writes fail when memory is full."),
            ("none", "None", "No cache, no policy."),
        ],
    },
    Field {
        name: "write_policy",
        label: "Write policy",
        description: "What a write does to the cache.",
        values: &[
            ("cache-aside", "Cache-aside", "Reads fill the cache; writes remove the stale entry."),
            ("write-through", "Write-through", "Writes update the cache and the database together."),
        ],
    },
    Field {
        name: "password_storage",
        label: "Password storage",
        description: "What the database keeps instead of (or as) the password.",
        values: &[
            ("bcrypt", "bcrypt", "A slow, salted hash built for passwords."),
            ("argon2id", "Argon2id", "The memory-hard winner of the Password Hashing Competition."),
            ("bcrypt-pepper", "bcrypt + pepper", "bcrypt over the password mixed with a server-side secret."),
            ("sha256", "SHA-256 (unsafe)", "A fast unsalted hash: shows why fast hashes are cracked."),
            ("plaintext", "Plaintext (unsafe)", "The password itself: shows what a leak would reveal."),
        ],
    },
    Field {
        name: "encryption",
        label: "Encryption at rest",
        description: "Whether email and full name are encrypted in the database.",
        values: &[
            ("none", "None", "Stored as typed."),
            ("aes-256-gcm", "AES-256-GCM", "Encrypted with a key of the session's own; email found by a blind index."),
        ],
    },
    Field {
        name: "provisioner",
        label: "Where it runs",
        description: "Where your database and cache are made.",
        values: &[
            ("embedded", "Embedded", "A SQLite file and an in-process cache of your own: instant, needs nothing."),
            ("shared", "Shared servers", "A database and keyspace of your own on shared PostgreSQL, MariaDB, MongoDB, Redis, Memcached."),
            ("docker", "Docker containers", "Your own database and cache containers, with memory and CPU limits."),
        ],
    },
];

/// What `GET /api/options` says beside MongoDB: what this project's own tests ran it against.
pub const MONGODB_NOTE: &str = "No MongoDB server can be installed where stacklab is built, so \
its tests (scripts/test) run MongoDB against SecantusDB, a MongoDB-wire-compatible stand-in \
with authentication: it is single-node (no replica sets, no sharding) and its usersInfo \
ignores forAllDBs, so a session's user that outlived its database is not found by the leftover \
sweep. STACKLAB_TEST_MONGO_URL points the same tests at a real MongoDB server.";

/// The policies each cache engine offers, the first being its default.
pub fn policies(cache: CacheEngine) -> &'static [&'static str] {
    match cache {
        CacheEngine::Memory => &["lru", "lfu", "fifo", "ttl"],
        CacheEngine::Redis => &[
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "noeviction",
        ],
        CacheEngine::Memcached => &["lru"],
        CacheEngine::None => &["none"],
    }
}

/// Checks a runtime's `unsupported` key (`<field>.<value>`): a real choice and one of its values
/// (not the runtime or the provisioner, which are not the runtime's to refuse).
pub fn check_unsupported_key(key: &str) -> Result<(), String> {
    let (field, value) = key.split_once('.').unwrap_or((key, ""));
    let Some(f) = FIELDS
        .iter()
        .find(|f| f.name == field && f.name != "runtime" && f.name != "provisioner")
    else {
        return Err(format!(
            "unsupported: `{field}` is not a choice a runtime can refuse; use one of {}",
            FIELDS
                .iter()
                .filter(|f| f.name != "runtime" && f.name != "provisioner")
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if !f.values.iter().any(|(v, ..)| *v == value) {
        return Err(format!(
            "unsupported: `{value}` is not a {field}; choose one of {}",
            f.values
                .iter()
                .map(|(v, ..)| *v)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// What a session was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choices {
    pub runtime: String,
    pub protocol: ApiProtocol,
    pub transport: String,
    pub database: DatabaseEngine,
    pub cache: CacheEngine,
    pub cache_policy: String,
    pub write_policy: WritePolicy,
    pub password_storage: PasswordStorage,
    pub encryption: Encryption,
    pub provisioner: String,
}

/// A choice that cannot be taken: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceError {
    pub field: String,
    pub message: String,
}

fn enum_from<T: serde::de::DeserializeOwned>(v: &str) -> T {
    serde_json::from_value(Value::String(v.to_owned())).expect("values are checked against FIELDS")
}

impl Choices {
    /// Reads a `POST /api/sessions` body: every field optional, every value checked.
    pub fn parse(body: &Value) -> Result<Self, ChoiceError> {
        let empty = Map::new();
        let obj = match body {
            Value::Object(o) => o,
            Value::Null => &empty,
            _ => {
                return Err(ChoiceError {
                    field: "body".into(),
                    message: "send a JSON object of choices, e.g. {\"database\":\"sqlite\"}".into(),
                })
            }
        };
        for key in obj.keys() {
            if !FIELDS.iter().any(|f| f.name == key) {
                return Err(ChoiceError {
                    field: key.clone(),
                    message: format!(
                        "`{key}` is not a choice; the choices are {}",
                        FIELDS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        let mut picked = std::collections::HashMap::new();
        for f in FIELDS {
            let value = match obj.get(f.name) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(_) => {
                    return Err(ChoiceError {
                        field: f.name.into(),
                        message: format!("`{}` must be a string", f.name),
                    })
                }
            };
            if let Some(v) = value {
                if f.name == "runtime" {
                    if v.is_empty()
                        || !v
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    {
                        return Err(ChoiceError {
                            field: "runtime".into(),
                            message: format!(
                                "`{v}` is not a runtime name; GET /api/options lists the runtimes"
                            ),
                        });
                    }
                } else if !f.values.iter().any(|(name, ..)| *name == v) {
                    return Err(ChoiceError {
                        field: f.name.into(),
                        message: format!(
                            "`{v}` is not a {}; choose one of {}",
                            f.name,
                            f.values
                                .iter()
                                .map(|(n, ..)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
            picked.insert(f.name, value.map(str::to_owned));
        }
        let get = |name: &str| -> String {
            picked[name].clone().unwrap_or_else(|| {
                FIELDS
                    .iter()
                    .find(|f| f.name == name)
                    .expect("known field")
                    .values[0]
                    .0
                    .to_owned()
            })
        };
        let cache: CacheEngine = enum_from(&get("cache"));
        let cache_policy = match &picked["cache_policy"] {
            None => policies(cache)[0].to_owned(),
            Some(p) if policies(cache).contains(&p.as_str()) => p.clone(),
            Some(p) => {
                return Err(ChoiceError {
                    field: "cache_policy".into(),
                    message: format!(
                        "`{p}` is not a policy of the {} cache; choose one of {}",
                        get("cache"),
                        policies(cache).join(", ")
                    ),
                })
            }
        };
        Ok(Choices {
            runtime: get("runtime"),
            protocol: enum_from(&get("protocol")),
            transport: get("transport"),
            database: enum_from(&get("database")),
            cache,
            cache_policy,
            write_policy: enum_from(&get("write_policy")),
            password_storage: enum_from(&get("password_storage")),
            encryption: enum_from(&get("encryption")),
            provisioner: get("provisioner"),
        })
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("choices serialize")
    }

    /// Reads back what [`Choices::to_json`] wrote (the registry).
    pub fn from_json(text: &str) -> Result<Self, ChoiceError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ChoiceError {
            field: "choices".into(),
            message: e.to_string(),
        })?;
        Self::parse(&v)
    }
}

/// What an install can give: for each provisioner, whether it is usable at all, and for each
/// database and cache engine, whether that provisioner gives it.
pub trait Offer {
    fn provisioner(&self, name: &str) -> Result<(), String>;
    fn database(&self, provisioner: &str, engine: DatabaseEngine) -> Result<(), String>;
    fn cache(&self, provisioner: &str, engine: CacheEngine) -> Result<(), String>;
}

/// A runtime as `GET /api/options` shows it.
#[derive(Debug, Clone)]
pub struct RuntimeOffer {
    pub name: String,
    pub label: String,
    pub description: String,
    /// Why it cannot run here, if it cannot.
    pub available: Result<(), String>,
    /// Choices it cannot serve (`field.value` → why): its manifest's `unsupported`.
    pub unsupported: std::collections::BTreeMap<String, String>,
}

/// `GET /api/options`: every choice, its default, and what this install can offer.
pub fn options(offer: &dyn Offer, runtimes: &[RuntimeOffer]) -> Value {
    let provisioners: Vec<&str> = FIELDS
        .iter()
        .find(|f| f.name == "provisioner")
        .expect("provisioner field")
        .values
        .iter()
        .map(|v| v.0)
        .collect();
    let choices: Vec<Value> = FIELDS
        .iter()
        .map(|f| {
            if f.name == "runtime" {
                let options: Vec<Value> = runtimes
                    .iter()
                    .map(|r| {
                        let mut o = json!({"value": r.name, "label": r.label, "description": r.description, "available": r.available.is_ok()});
                        if let Err(why) = &r.available {
                            o["reason"] = json!(why);
                        }
                        let unsupported: Vec<Value> = r
                            .unsupported
                            .iter()
                            .filter_map(|(key, why)| {
                                let (field, value) = key.split_once('.')?;
                                Some(json!({"field": field, "value": value, "reason": why}))
                            })
                            .collect();
                        o["unsupported"] = Value::Array(unsupported);
                        o
                    })
                    .collect();
                return json!({"field": f.name, "label": f.label, "description": f.description, "default": f.values[0].0, "options": options});
            }
            let options: Vec<Value> = f
                .values
                .iter()
                .map(|(value, label, description)| {
                    let mut o = json!({"value": value, "label": label, "description": description, "available": true});
                    let mut reason = None;
                    match f.name {
                        "provisioner" => reason = offer.provisioner(value).err(),
                        "database" | "cache" => {
                            if f.name == "database" && *value == "mongodb" {
                                o["note"] = json!(MONGODB_NOTE);
                            }
                            let mut by = Vec::new();
                            let mut why = Vec::new();
                            for p in &provisioners {
                                let r = if f.name == "database" {
                                    offer.database(p, enum_from(value))
                                } else {
                                    offer.cache(p, enum_from(value))
                                };
                                match r.and_then(|()| offer.provisioner(p)) {
                                    Ok(()) => by.push(*p),
                                    Err(e) => why.push(format!("{p}: {e}")),
                                }
                            }
                            if by.is_empty() {
                                reason = Some(why.join("; "));
                            }
                            o["provisioners"] = json!(by);
                        }
                        "cache_policy" => {
                            let caches: Vec<&str> = ["memory", "redis", "memcached", "none"]
                                .into_iter()
                                .filter(|c| policies(enum_from(c)).contains(value))
                                .collect();
                            o["caches"] = json!(caches);
                        }
                        _ => {}
                    }
                    if let Some(r) = reason {
                        o["available"] = json!(false);
                        o["reason"] = json!(r);
                    }
                    o
                })
                .collect();
            let mut c = json!({"field": f.name, "label": f.label, "description": f.description, "default": f.values[0].0, "options": options});
            if f.name == "cache_policy" {
                c["default"] = json!("lru");
                c["default_for"] = json!({"memory": "lru", "redis": "allkeys-lru", "memcached": "lru", "none": "none"});
            }
            c
        })
        .collect();
    json!({ "choices": choices })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_may_refuse_only_real_choices() {
        assert!(check_unsupported_key("database.mongodb").is_ok());
        assert!(check_unsupported_key("password_storage.argon2id").is_ok());
        let e = check_unsupported_key("database.oracle").unwrap_err();
        assert!(e.contains("not a database") && e.contains("sqlite"), "{e}");
        let e = check_unsupported_key("runtime.rust").unwrap_err();
        assert!(e.contains("not a choice a runtime can refuse"), "{e}");
        let e = check_unsupported_key("colour.red").unwrap_err();
        assert!(e.contains("use one of protocol"), "{e}");
    }

    #[test]
    fn defaults_and_named_errors() {
        let c = Choices::parse(&json!({})).unwrap();
        assert_eq!(c.database, DatabaseEngine::Sqlite);
        assert_eq!(c.cache_policy, "lru");
        assert_eq!(c.provisioner, "embedded");
        assert_eq!(c.password_storage, PasswordStorage::Bcrypt);
        let c = Choices::parse(&json!({"cache": "redis"})).unwrap();
        assert_eq!(c.cache_policy, "allkeys-lru");
        assert_eq!(Choices::from_json(&c.to_json().to_string()).unwrap(), c);
        for (body, field) in [
            (json!({"database": "oracle"}), "database"),
            (
                json!({"cache": "memory", "cache_policy": "allkeys-lru"}),
                "cache_policy",
            ),
            (json!({"colour": "red"}), "colour"),
            (json!({"protocol": 3}), "protocol"),
            (json!({"runtime": "Py thon"}), "runtime"),
            (json!([1]), "body"),
        ] {
            assert_eq!(Choices::parse(&body).unwrap_err().field, field, "{body}");
        }
    }

    #[test]
    fn mongodb_says_what_it_was_tested_against() {
        struct All;
        impl Offer for All {
            fn provisioner(&self, _: &str) -> Result<(), String> {
                Ok(())
            }
            fn database(&self, _: &str, _: DatabaseEngine) -> Result<(), String> {
                Ok(())
            }
            fn cache(&self, _: &str, _: CacheEngine) -> Result<(), String> {
                Ok(())
            }
        }
        let all = options(&All, &[]);
        let databases = all["choices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["field"] == "database")
            .unwrap()["options"]
            .as_array()
            .unwrap()
            .clone();
        for o in &databases {
            let note = o["note"].as_str();
            if o["value"] == "mongodb" {
                let note = note.expect("MongoDB has a note");
                assert!(note.contains("SecantusDB") && note.contains("STACKLAB_TEST_MONGO_URL"));
            } else {
                assert_eq!(note, None, "{o}");
            }
        }
    }
}
