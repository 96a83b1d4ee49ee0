//! edge-abuse: hostile clients at the edge while a normal client keeps its load.

use super::*;

/// Hostile clients at the edge — slowloris (stalled TLS handshakes and trickled request
/// heads), oversized headers and bodies, 10k connections opened and dropped — while a normal
/// client (another loopback address) keeps its load going: it is served throughout, and each
/// abuse gets the limit's answer.
pub(super) async fn edge_abuse(o: &Options) -> anyhow::Result<Outcome> {
    let name = "edge-abuse";
    let mut st = Stack::new(
        o,
        name,
        &[
            (
                "header_read_timeout_ms = 10000",
                "header_read_timeout_ms = 2000",
            ),
            (
                "tls_handshake_timeout_ms = 10000",
                "tls_handshake_timeout_ms = 2000",
            ),
        ],
        "",
    )?;
    let result = async {
        let (_, edge_addr, _) = st.up(2).await?;
        let edge = st.edge(edge_addr)?;
        let codes = sessions(&edge, 2, cheap()).await?;
        let normal = edge.from(IpAddr::from([127, 0, 0, 2]));
        let load = Load::start(&normal, &codes, GETS / 2, 1, o.seconds);

        // 10k connections opened and dropped at once (RST), 256 at a time.
        let churn = {
            let edge = edge.clone();
            tokio::spawn(async move {
                let sem = Arc::new(tokio::sync::Semaphore::new(256));
                let mut set = tokio::task::JoinSet::new();
                for i in 0..10_000u32 {
                    let permit = Arc::clone(&sem).acquire_owned().await;
                    let e = edge.from(IpAddr::from([127, 0, 1, (i % 200) as u8 + 1]));
                    set.spawn(async move {
                        let _p = permit;
                        e.tcp().await.is_ok()
                    });
                }
                let mut opened = 0;
                while let Some(r) = set.join_next().await {
                    opened += usize::from(r.unwrap_or(false));
                }
                opened
            })
        };
        // Slowloris: 200 connections that never finish the TLS handshake, 200 that trickle a
        // request head a byte every 300 ms; the server must close them all.
        let slow = {
            let edge = edge.from(IpAddr::from([127, 0, 0, 5]));
            tokio::spawn(async move {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..400 {
                    let edge = edge.clone();
                    set.spawn(async move {
                        let started = Instant::now();
                        let limit = Duration::from_secs(8);
                        if i % 2 == 0 {
                            let Ok(mut tcp) = edge.tcp().await else { return (false, false) };
                            let mut b = [0u8; 64];
                            let closed = matches!(tokio::time::timeout(limit, tokio::io::AsyncReadExt::read(&mut tcp, &mut b)).await, Ok(Ok(0) | Err(_)));
                            (closed, false)
                        } else {
                            let Ok(tcp) = edge.tcp().await else { return (false, false) };
                            let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::clone(&edge.tls))
                                .connect(rustls_pki_types::ServerName::try_from("localhost").expect("a name"), tcp)
                                .await
                            else {
                                return (false, false);
                            };
                            let head = b"GET /api/options HTTP/1.1\r\nhost: localhost\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
                            for byte in head.iter() {
                                if started.elapsed() > limit || tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            let mut rest = Vec::new();
                            let read = tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut rest)).await;
                            let got_408 = rest.starts_with(b"HTTP/1.1 408");
                            (started.elapsed() < limit + Duration::from_secs(1) && read.is_ok(), got_408)
                        }
                    });
                }
                let (mut closed, mut got_408) = (0, 0);
                while let Some(r) = set.join_next().await {
                    let (c, t) = r.unwrap_or((false, false));
                    closed += usize::from(c);
                    got_408 += usize::from(t);
                }
                (closed, got_408)
            })
        };
        // Oversized headers (64 KiB) and bodies (declared 16 MiB; streamed 9 MiB).
        let big = edge.from(IpAddr::from([127, 0, 0, 4]));
        let (mut h431, mut b413) = (0, 0);
        let huge = "a".repeat(64 * 1024);
        for _ in 0..20 {
            let mut send = big.connect().await?;
            let req = Request::get("/api/options")
                .header("host", "localhost")
                .header("x-big", huge.as_str())
                .body(Full::new(Bytes::new()))?;
            if let Ok(Ok(res)) = tokio::time::timeout(REQUEST_TIMEOUT, send.send_request(req)).await {
                h431 += usize::from(res.status() == 431);
            }
        }
        let mut b413_streamed = 0;
        for i in 0..20 {
            // Half declare 16 MiB, half stream 9 MiB chunked: both past limits.max_body_bytes.
            let status = oversized_body(&big, &codes[0], i % 2 == 1).await;
            if status == "413" {
                b413 += 1;
                b413_streamed += i % 2;
            } else if o.keep {
                eprintln!("oversized body {i} (chunked: {}): {status}", i % 2 == 1);
            }
        }
        let opened = churn.await.unwrap_or(0);
        let (slow_closed, slow_408) = slow.await.unwrap_or((0, 0));
        let resent = load.resent.load(Relaxed);
        let recs = load.finish().await;
        let t = Tally::of(&recs);
        let mut fails = Vec::new();
        pass_fail(t.failed() == 0 && t.client_errors == 0, "the normal client was not served throughout", &mut fails);
        pass_fail(h431 == 20, "an oversized header did not get 431", &mut fails);
        // Declared oversized bodies get the proxy's 413; streamed ones the backend's (it reads
        // past its limit before answering, so the proxy is never reset mid-write) or the
        // proxy's, whichever limit is met first.
        pass_fail(
            b413 - b413_streamed == 10,
            "a declared oversized body did not get 413",
            &mut fails,
        );
        pass_fail(
            b413_streamed == 10,
            "a streamed oversized body did not get 413",
            &mut fails,
        );
        pass_fail(slow_closed == 400, "a slow connection was not closed in time", &mut fails);
        let figures = format!(
            "normal_client: {} | churn_opened_and_dropped={opened}/10000 slowloris_closed_in_time={slow_closed}/400 (408 sent to {slow_408}/200 trickled heads) headers_431={h431}/20 bodies_413_declared={}/10 bodies_413_streamed={b413_streamed}/10",
            figures(&t, resent),
            b413 - b413_streamed
        );
        Ok(finish(name, figures, fails, Some(&t)))
    }
    .await;
    st.stop().await;
    result
}

/// Sends an oversized body as a client that reads while it writes (as curl does), and says
/// the answer's status (or what happened instead).
pub(super) async fn oversized_body(edge: &Edge, code: &str, chunked: bool) -> String {
    let Ok(tcp) = edge.tcp().await else {
        return "no connection".into();
    };
    let Ok(tls) = tokio_rustls::TlsConnector::from(Arc::clone(&edge.tls))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").expect("a name"),
            tcp,
        )
        .await
    else {
        return "no TLS".into();
    };
    let (mut rd, mut wr) = tokio::io::split(tls);
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {}", 16 << 20)
    };
    let head = format!(
        "POST /api/users HTTP/1.1\r\nhost: localhost\r\ncookie: stacklab_session={code}\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b' '; 64 * 1024];
        let total = if chunked { 9 << 20 } else { 16 << 20 };
        let mut sent = 0;
        while sent < total {
            let ok = if chunked {
                let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                c.extend_from_slice(&chunk);
                c.extend_from_slice(b"\r\n");
                wr.write_all(&c).await.is_ok()
            } else {
                wr.write_all(&chunk).await.is_ok()
            };
            if !ok {
                return;
            }
            sent += chunk.len();
        }
        let _ = wr.write_all(if chunked { b"0\r\n\r\n" } else { b"" }).await;
        let _ = wr.flush().await;
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut end = String::new();
    while got.len() < 12 && Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(&mut rd, &mut buf))
            .await
        {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(Ok(_)) => end = "closed".into(),
            Ok(Err(e)) => end = e.to_string(),
            Err(_) => end = "timeout".into(),
        }
        if !end.is_empty() {
            break;
        }
    }
    writer.abort();
    match std::str::from_utf8(&got)
        .ok()
        .and_then(|t| t.strip_prefix("HTTP/1.1 "))
    {
        Some(rest) => rest.chars().take(3).collect(),
        None => format!("no answer ({end})"),
    }
}
