//! Telling the outside world how replication is doing: an HTTP health endpoint (`/healthz`,
//! `/readyz`, and Prometheus metrics on `/metrics`) and systemd's notification protocol
//! (`READY=1`, `STATUS=`, `STOPPING=1`, `WATCHDOG=1`, `EXTEND_TIMEOUT_USEC=`).

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

/// How often `EXTEND_TIMEOUT_USEC=` is sent while a restore on boot runs, and by how much each
/// extends systemd's start timeout (from the moment it arrives).
const EXTEND_EVERY: Duration = Duration::from_secs(10);
const EXTEND_BY: Duration = Duration::from_secs(30);

/// Sends systemd notifications while `NOTIFY_SOCKET` is set: `READY=1` the first time litestream
/// is ready, `STATUS=` on each state change, `STOPPING=1` when a stop begins;
/// `EXTEND_TIMEOUT_USEC=` every 10 s while a restore on boot runs (before `READY=1`); and, when
/// systemd asks for a watchdog (`WATCHDOG_USEC=`, for this pid), `WATCHDOG=1` every half period.
///
/// The watchdog says the supervisor is alive: this task pings only while the supervising task
/// (and, before it, a restore on boot) keeps returning from its polls, as [`beating`] records,
/// and has not failed or stopped. A supervisor stuck inside a call (a deadlock, a blocking call
/// that never returns, a loop) stops the pings and systemd restarts it. A litestream crash loop
/// does not stop them: the supervisor is handling it (restarts with backoff, `--max-restarts`),
/// and systemd restarting the supervisor would not help. Ends with the status channel.
pub async fn notify_systemd(mut status: watch::Receiver<Status>) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let watchdog = watchdog_from_env();
    beat(); // the process is starting: alive until a supervisor shows otherwise
    let notify = |msg: &str| {
        if let Err(e) = send(&socket, msg) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    };
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let mut ping = tokio::time::interval(watchdog.map_or(far, |p| p / 2));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look = tokio::time::interval(Duration::from_millis(500));
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut extended: Option<tokio::time::Instant> = None;
    let mut starved = false;
    let mut ready_sent = false;
    let mut last = String::new();
    let mut state_changed = true;
    loop {
        if state_changed {
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
                notify(&format!("{msg}STATUS=litestream {word}\n"));
                ready_sent |= msg.contains("READY=1");
                last = word.to_string();
            }
        }
        state_changed = false;
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
                state_changed = true;
            }
            _ = ping.tick(), if watchdog.is_some() => {
                let over = matches!(status.borrow().state, State::Stopped | State::Failed { .. });
                let period = watchdog.unwrap_or_default();
                let silent = since_last_beat();
                if !over && silent < period / 2 {
                    notify("WATCHDOG=1\n");
                    starved = false;
                } else if !over && !starved {
                    starved = true;
                    tracing::error!(silent_ms = silent.as_millis() as u64, "the supervisor is stuck: no longer feeding systemd's watchdog, which will restart this service");
                }
            }
            _ = look.tick(), if !ready_sent => {
                let due = extended.is_none_or(|at| at.elapsed() >= EXTEND_EVERY);
                if crate::restore::restoring_on_boot() && due {
                    tracing::debug!("restoring on boot: extending systemd's start timeout");
                    notify(&format!("EXTEND_TIMEOUT_USEC={}\n", EXTEND_BY.as_micros()));
                    extended = Some(tokio::time::Instant::now());
                }
            }
        }
    }
}

/// The watchdog period systemd asks this process for, if any.
fn watchdog_from_env() -> Option<Duration> {
    watchdog_period(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// When a supervising task last returned from a poll: milliseconds since [`EPOCH`]. One per
/// process: with two daemons in one process, either one beating feeds the watchdog.
static LAST_BEAT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

fn beat() {
    LAST_BEAT_MS.fetch_max(now_ms(), std::sync::atomic::Ordering::Relaxed);
}

fn since_last_beat() -> Duration {
    Duration::from_millis(
        now_ms().saturating_sub(LAST_BEAT_MS.load(std::sync::atomic::Ordering::Relaxed)),
    )
}

/// `fut`, recording a heartbeat for the systemd watchdog each time a poll of it returns; polled
/// at least every quarter watchdog period to say so even while it waits. Without a watchdog,
/// just `fut`. (A spurious poll is harmless: every future must allow it.)
pub(crate) async fn beating<F: std::future::Future>(fut: F) -> F::Output {
    match watchdog_from_env() {
        Some(period) => beating_every(period / 4, fut).await,
        None => fut.await,
    }
}

async fn beating_every<F: std::future::Future>(every: Duration, fut: F) -> F::Output {
    use std::task::Poll;
    let mut fut = std::pin::pin!(fut);
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        beat();
        while tick.poll_tick(cx).is_ready() {}
        Poll::Pending
    })
    .await
}

/// The watchdog period systemd asks for: `WATCHDOG_USEC` microseconds, when `WATCHDOG_PID` is
/// unset or names this process (`pid`).
fn watchdog_period(usec: Option<&str>, watchdog_pid: Option<&str>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(p) = watchdog_pid {
        if p.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_supervisor_stuck_in_a_call_stops_the_heartbeat() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let every = Duration::from_millis(20);
        let fresh = || since_last_beat() < every * 10;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // A task that waits (an hour's sleep): the ticks poll it, it beats.
        let waiting = tokio::spawn(beating_every(every, async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }));
        tokio::time::sleep(every * 20).await;
        while std::time::Instant::now() < deadline && !fresh() {
            tokio::time::sleep(every).await;
        }
        assert!(fresh(), "a waiting task does not beat");
        waiting.abort();
        // A task blocked inside its poll: no more beats, until it is released.
        let release = std::sync::Arc::new(AtomicBool::new(false));
        let held = release.clone();
        let blocked = tokio::spawn(beating_every(every, async move {
            tokio::task::yield_now().await;
            while !held.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
        while std::time::Instant::now() < deadline && fresh() {
            tokio::time::sleep(every).await;
        }
        let stale = !fresh();
        release.store(true, Ordering::Relaxed);
        blocked.await.unwrap();
        assert!(stale, "a blocked task still beats");
    }

    #[test]
    fn the_watchdog_is_ours_when_its_pid_is_unset_or_ours() {
        let p = Some(Duration::from_millis(200));
        assert_eq!(watchdog_period(Some("200000"), None, 7), p);
        assert_eq!(watchdog_period(Some("200000"), Some("7"), 7), p);
        assert_eq!(watchdog_period(Some("200000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period(None, None, 7), None);
    }
}
