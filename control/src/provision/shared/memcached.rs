//! Memcached: a key prefix only (no accounts); teardown deletes the keys the LRU crawler lists.

use super::{
    percent_decode, Shared, CACHE, MEMCACHED_BUSY_RETRIES, MEMCACHED_BUSY_WAIT,
    MEMCACHED_DELETE_BATCH, MEMCACHED_DUMP_BUDGET, MEMCACHED_MAX_LINE, STEP_TIMEOUT,
};
use crate::provision::{ProvisionError, Steps};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

impl Shared {
    pub(super) fn memcached_addr(&self) -> Result<String, String> {
        let addr = self
            .cfg
            .memcached_addr
            .as_ref()
            .ok_or("no shared Memcached server is configured: set shared.memcached_addr")?;
        Ok(addr
            .strip_prefix("memcache://")
            .or_else(|| addr.strip_prefix("memcached://"))
            .unwrap_or(addr)
            .trim_end_matches('/')
            .to_owned())
    }

    /// Checks the server answers a write and a read of a key under the session's prefix.
    pub(super) async fn make_memcached(
        &self,
        id: &str,
        steps: &Steps,
    ) -> Result<String, ProvisionError> {
        let name = self.engine_name(id);
        let addr = self
            .memcached_addr()
            .map_err(|m| ProvisionError::new(CACHE, m))?;
        let at = format!("Memcached at {addr}");
        self.step(
            steps,
            CACHE,
            "cache: Memcached ready",
            &format!("wrote and read back a key under {name}: (a key prefix only: Memcached has no accounts)"),
            "",
            async {
                let (key, server) = (format!("{name}:~ready"), format!("memcache://{addr}?protocol=ascii"));
                let timeout = STEP_TIMEOUT / 4;
                tokio::task::spawn_blocking(move || -> Result<Option<String>, memcache::MemcacheError> {
                    let client = memcache::Client::builder()
                        .add_server(server)?
                        .with_max_pool_size(1)
                        .with_connection_timeout(timeout)
                        .with_read_timeout(timeout)
                        .with_write_timeout(timeout)
                        .build()?;
                    client.set(&key, "1", 60)?;
                    let got = client.get::<String>(&key)?;
                    client.delete(&key)?;
                    Ok(got)
                })
                .await
                .map_err(|e| format!("{at}: {e}"))?
                .map_err(|e| format!("{at}: {e}"))
                .and_then(|got| match got.as_deref() {
                    Some("1") => Ok(()),
                    _ => Err(format!("{at}: a key written under {name}: did not read back")),
                })
            },
        )
        .await?;
        Ok(addr)
    }

    /// Deletes every key under `name:` that `lru_crawler metadump` lists.
    pub(super) async fn remove_memcached(&self, name: &str) -> Result<(), String> {
        let addr = self.memcached_addr()?;
        let at = format!("Memcached at {addr}");
        let prefix = format!("{name}:");
        let io = |what: &str, e: std::io::Error| format!("{at}: {what}: {e}");
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| io("connect", e))?;
        let mut conn = BufReader::new(stream);
        let mut busy = 0;
        let (keys, complete) = 'dump: loop {
            conn.get_mut()
                .write_all(b"lru_crawler metadump all\r\n")
                .await
                .map_err(|e| io("lru_crawler metadump", e))?;
            let (mut keys, mut lines) = (Vec::new(), 0usize);
            loop {
                let line = memcached_line(&mut conn)
                    .await
                    .map_err(|e| io("lru_crawler metadump", e))?;
                if line == "END" {
                    break 'dump (keys, true);
                }
                if line.starts_with("BUSY") {
                    busy += 1;
                    if busy > MEMCACHED_BUSY_RETRIES {
                        return Err(format!("{at}: the LRU crawler stayed busy; the keys {prefix}* expire by their TTL"));
                    }
                    tokio::time::sleep(MEMCACHED_BUSY_WAIT).await;
                    continue 'dump;
                }
                if line.starts_with("ERROR")
                    || line.starts_with("CLIENT_ERROR")
                    || line.starts_with("SERVER_ERROR")
                {
                    return Err(format!(
                        "{at}: cannot list keys ({line}; needs memcached 1.4.31 or later with the LRU \
                         crawler on); the keys {prefix}* expire by their TTL"
                    ));
                }
                lines += 1;
                if let Some(key) = line
                    .strip_prefix("key=")
                    .and_then(|rest| rest.split(' ').next())
                    .map(percent_decode)
                {
                    if key.starts_with(&prefix) && key.bytes().all(|b| b.is_ascii_graphic()) {
                        keys.push(key);
                    }
                }
                if lines >= MEMCACHED_DUMP_BUDGET {
                    break 'dump (keys, false);
                }
            }
        };
        // A dump cut short leaves the connection mid-answer: deletes go on a fresh one.
        let mut conn = if complete {
            conn
        } else {
            BufReader::new(
                tokio::net::TcpStream::connect(&addr)
                    .await
                    .map_err(|e| io("connect", e))?,
            )
        };
        for batch in keys.chunks(MEMCACHED_DELETE_BATCH) {
            let mut out = String::new();
            for key in batch {
                out.push_str("delete ");
                out.push_str(key);
                out.push_str("\r\n");
            }
            conn.get_mut()
                .write_all(out.as_bytes())
                .await
                .map_err(|e| io("delete", e))?;
            for _ in batch {
                let reply = memcached_line(&mut conn)
                    .await
                    .map_err(|e| io("delete", e))?;
                if reply != "DELETED" && reply != "NOT_FOUND" {
                    return Err(format!("{at}: delete answered {reply}"));
                }
            }
        }
        if complete {
            Ok(())
        } else {
            Err(format!(
                "{at}: the server holds more than {MEMCACHED_DUMP_BUDGET} items; the keys {prefix}* \
                 among the first were deleted, the others expire by their TTL"
            ))
        }
    }
}

/// One protocol line without its `\r\n`, at most [`MEMCACHED_MAX_LINE`] bytes, within
/// [`STEP_TIMEOUT`].
async fn memcached_line(conn: &mut BufReader<tokio::net::TcpStream>) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        STEP_TIMEOUT / 4,
        (&mut *conn)
            .take(MEMCACHED_MAX_LINE)
            .read_until(b'\n', &mut buf),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))??;
    if read == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if !buf.ends_with(b"\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long",
        ));
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}
