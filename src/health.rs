//! Telling the outside world how replication is doing: an HTTP health endpoint (`/healthz`,
//! `/readyz`, and Prometheus metrics on `/metrics`) and systemd's notification protocol (`READY=1`, `STATUS=`, `STOPPING=1`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::error::{Error, Result};
use crate::metrics;
use crate::status::{state_word, State, Status};

/// At most this many connections are served at once; beyond it a new connection is closed at
/// once (its client retries), so a flood of clients can neither exhaust descriptors nor memory.
pub const MAX_CONNECTIONS: usize = 32;
/// A client must send its request line and headers within this time, or it is dropped: idle
/// connections free their place, so the endpoints stay answerable after a flood.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The request line and headers may not exceed this (answered 431 beyond).
pub const MAX_HEADER_BYTES: usize = 4096;

/// Binds `addr` now (so a taken port is an immediate error), then serves until the task is
/// dropped: `GET /healthz` (200 when ready and every database synced recently, else 503; the
/// status as JSON either way), `GET /readyz` (200 once litestream is ready) and `GET /metrics`
/// (Prometheus text format, see [`metrics()`]). `HEAD` is answered like `GET` without the body;
/// any other method gets 405 with `Allow: GET, HEAD`, an unknown path 404, headers over
/// [`MAX_HEADER_BYTES`] 431. See [`MAX_CONNECTIONS`] and [`READ_TIMEOUT`] for the bounds.
pub async fn serve(
    addr: SocketAddr,
    status: watch::Receiver<Status>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {addr} for health checks: {e}")))?;
    tracing::info!(%addr, "health endpoint: /healthz, /readyz and /metrics");
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                Err(e) => {
                    // Out of descriptors, most likely: wait a little instead of spinning.
                    tracing::debug!(error = %e, "health endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                drop(conn); // full: closed at once
                continue;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(READ_TIMEOUT * 2, respond(conn, status)).await;
                drop(permit);
            });
        }
    }))
}

/// Reads one request from `conn` and answers it.
async fn respond(mut conn: TcpStream, status: watch::Receiver<Status>) {
    let mut buf = Vec::with_capacity(1024);
    // Some(true): a whole request; Some(false): headers too large; None: nothing to answer.
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(end <= MAX_HEADER_BYTES);
            }
            if buf.len() > MAX_HEADER_BYTES + 3 {
                return Some(false);
            }
            match conn.read(&mut chunk).await {
                // A client that sends its request and closes without the blank line.
                Ok(0) if !buf.is_empty() => return Some(true),
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let fits = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Some(fits)) => fits,
        Ok(None) | Err(_) => return, // closed, failed or too slow: dropped
    };
    let (code, content_type, body, head) = if !fits {
        (
            431,
            JSON,
            r#"{"error":"request headers too large"}"#.to_string(),
            false,
        )
    } else {
        let request = String::from_utf8_lossy(&buf);
        let mut words = request.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        match method {
            "GET" | "HEAD" if path == "/metrics" => (
                200,
                metrics::CONTENT_TYPE,
                metrics(&status.borrow()),
                method == "HEAD",
            ),
            "GET" | "HEAD" => {
                let (code, body) = answer(path, &status.borrow());
                (code, JSON, body, method == "HEAD")
            }
            _ if path.is_empty() => (400, JSON, r#"{"error":"bad request"}"#.into(), false),
            _ => (
                405,
                JSON,
                r#"{"error":"only GET and HEAD are allowed"}"#.into(),
                false,
            ),
        }
    };
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    if !head {
        response.push_str(&body);
    }
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
    if code == 431 {
        // Closing with unread bytes would reset the connection and lose the answer: read (and
        // discard) what the client still sends, for a moment.
        let drain = async {
            let mut chunk = [0u8; 4096];
            while matches!(conn.read(&mut chunk).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
}

const JSON: &str = "application/json";

/// The body of `GET /metrics` for `status`: Prometheus text exposition format 0.0.4, served
/// with `Content-Type` [`metrics::CONTENT_TYPE`]. For an
/// application that mounts the endpoint in its own HTTP server, like [`answer`].
pub fn metrics(status: &Status) -> String {
    metrics::render(status, SystemTime::now())
}

/// The answer to `GET path` (`/healthz`, `/readyz`) for `status`: an HTTP status code and a
/// JSON body. What [`serve`] answers, for an application that mounts the endpoints in its own
/// HTTP server (axum, hyper, ...) instead: `answer(req.uri().path(), &daemon.status().borrow())`.
/// `/metrics` is not JSON: its body is [`metrics()`] (here it is a 404).
pub fn answer(path: &str, status: &Status) -> (u16, String) {
    let now = SystemTime::now();
    let mut json = serde_json::to_value(status).unwrap_or_default();
    match path {
        "/healthz" => {
            let health = status.health(now);
            json["healthy"] = health.is_ok().into();
            if let Err(why) = &health {
                json["reason"] = why.clone().into();
            }
            (if health.is_ok() { 200 } else { 503 }, json.to_string())
        }
        "/readyz" => (
            if status.state == State::Ready {
                200
            } else {
                503
            },
            json.to_string(),
        ),
        _ => (
            404,
            r#"{"error":"use /healthz, /readyz or /metrics"}"#.into(),
        ),
    }
}

/// Sends systemd notifications while `NOTIFY_SOCKET` is set: `READY=1` the first time litestream
/// is ready, `STATUS=` on each state change, `STOPPING=1` when a stop begins. Ends with the
/// status channel.
pub async fn notify_systemd(mut status: watch::Receiver<Status>) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let mut ready_sent = false;
    let mut last = String::new();
    loop {
        let (word, msg) = {
            let s = status.borrow_and_update();
            let word = state_word(&s.state);
            let mut msg = String::new();
            if s.state == State::Ready && !ready_sent {
                msg.push_str("READY=1\n");
            }
            if s.state == State::Stopping {
                msg.push_str("STOPPING=1\n");
            }
            (word, msg)
        };
        if word != last {
            let mut full = msg.clone();
            full.push_str(&format!("STATUS=litestream {word}\n"));
            if let Err(e) = send(&socket, &full) {
                tracing::warn!(error = %e, "cannot notify systemd");
            }
            ready_sent |= msg.contains("READY=1");
            last = word.to_string();
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

fn send(socket: &std::ffi::OsStr, msg: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(msg.as_bytes(), &addr)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        let _ = name;
    }
    sock.send_to(msg.as_bytes(), socket)?;
    Ok(())
}
