//! Telling the outside world how replication is doing: an HTTP health endpoint (`/healthz`,
//! `/readyz`) and systemd's notification protocol (`READY=1`, `STATUS=`, `STOPPING=1`).

use std::net::SocketAddr;
use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::status::{state_word, State, Status};

/// Binds `addr` now (so a taken port is an immediate error), then serves `GET /healthz` (200
/// when ready and every database synced recently, else 503; the status as JSON either way) and
/// `GET /readyz` (200 once litestream is ready) until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    status: watch::Receiver<Status>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {addr} for health checks: {e}")))?;
    tracing::info!(%addr, "health endpoint: /healthz and /readyz");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let status = status.clone();
            tokio::spawn(async move {
                // The request line and headers, up to 4 KiB.
                let mut buf = Vec::with_capacity(1024);
                let read = async {
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 4096 {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                };
                if tokio::time::timeout(std::time::Duration::from_secs(5), read)
                    .await
                    .is_err()
                {
                    return;
                }
                let n = buf.len();
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (code, body) = answer(path, &status.borrow());
                let reason = match code {
                    200 => "OK",
                    404 => "Not Found",
                    _ => "Service Unavailable",
                };
                let response = format!(
                    "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    }))
}

/// The answer to `GET path` (`/healthz`, `/readyz`) for `status`: an HTTP status code and a
/// JSON body. What [`serve`] answers, for an application that mounts the endpoints in its own
/// HTTP server (axum, hyper, ...) instead: `answer(req.uri().path(), &daemon.status().borrow())`.
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
        _ => (404, r#"{"error":"use /healthz or /readyz"}"#.into()),
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
