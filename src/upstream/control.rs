//! A client for litestream's control socket: plain HTTP/1.1 with JSON over a Unix socket.
//! Every request has a client-side timeout (with an unreachable S3 replica, `/list` and `/sync`
//! hang).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The socket is not there or nobody listens.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error("no answer from litestream within {0:?}")]
    Timeout(Duration),
    /// The answer was not HTTP with a JSON body, or reported an error.
    #[error("{0}")]
    Protocol(String),
}

/// The control socket of one litestream process.
#[derive(Debug, Clone)]
pub struct ControlClient {
    path: PathBuf,
}

impl ControlClient {
    /// A client for the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ControlClient { path: path.into() }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `GET path`, parsed as JSON.
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<Value, ControlError> {
        self.request("GET", path, None, timeout).await
    }

    /// `POST path` with a JSON body, parsed as JSON.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, ControlError> {
        self.request("POST", path, Some(body), timeout).await
    }

    /// `POST /sync {"path"}`: litestream copies the WAL into its local state now and answers with
    /// its positions, without waiting for the replica. Never with `wait` or `timeout` while
    /// litestream is to go on replicating: litestream then opens its WAL read transaction under the
    /// request's context, which ends with the request, and the application's checkpoints restart
    /// the WAL under it (docs/litestream-0.5.md, "The WAL read lock").
    pub async fn sync_local(&self, path: &str, timeout: Duration) -> Result<Synced, ControlError> {
        let answer = self
            .post("/sync", &serde_json::json!({ "path": path }), timeout)
            .await?;
        Ok(Synced {
            txid: answer["txid"].as_u64(),
            replicated_txid: answer["replicated_txid"].as_u64(),
        })
    }

    /// Waits until the replica of `path` holds the local transaction reached now, keeping
    /// litestream's WAL read lock: `/sync` without `wait`, polled until `replicated_txid` catches up
    /// or `deadline`. Returns the positions last seen (the target is `txid`).
    pub async fn sync_until_replicated(
        &self,
        path: &str,
        deadline: std::time::Instant,
    ) -> Result<(u64, Synced), String> {
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        let first = self
            .sync_local(path, left().min(Duration::from_secs(5)))
            .await
            .map_err(|e| e.to_string())?;
        let target = first.txid.unwrap_or(0);
        let mut last = first;
        let mut pause = Duration::from_millis(20);
        while last.replicated_txid.unwrap_or(0) < target {
            if left() <= pause {
                return Err(format!(
                    "the replica reached transaction {} of {target} in time",
                    last.replicated_txid.unwrap_or(0)
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
            last = self
                .sync_local(path, left().min(Duration::from_secs(5)))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok((target, last))
    }

    /// The paths litestream replicates, as it names them (`/list`).
    pub async fn listed_paths(&self, timeout: Duration) -> Result<Vec<String>, String> {
        let list = self
            .get("/list", timeout)
            .await
            .map_err(|e| e.to_string())?;
        Ok(list["databases"]
            .as_array()
            .map(|dbs| {
                dbs.iter()
                    .filter_map(|d| d["path"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, ControlError> {
        tokio::time::timeout(timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| ControlError::Timeout(timeout))?
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ControlError> {
        let mut stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| ControlError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: litestream\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let io = |e: std::io::Error| ControlError::Protocol(format!("control socket: {e}"));
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(io)?;
        parse_response(&raw)
    }
}

/// The positions a `/sync` answer reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Synced {
    /// The local transaction litestream reached.
    pub txid: Option<u64>,
    /// The transaction the replica holds.
    pub replicated_txid: Option<u64>,
}

/// Parses an HTTP/1.1 response (Content-Length, chunked, or read to close) into JSON.
fn parse_response(raw: &[u8]) -> Result<Value, ControlError> {
    let bad =
        |what: &str| ControlError::Protocol(format!("unexpected answer from litestream: {what}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("header not text"))?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("broken chunked body"))?;
    }
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|_| bad("body is not JSON"))?
    };
    if !(200..300).contains(&status) {
        let msg = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(ControlError::Protocol(format!(
            "litestream answered {status}: {msg}"
        )));
    }
    Ok(value)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"pid\": 42}";
        assert_eq!(parse_response(plain).unwrap()["pid"], 42);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap()["a"], 1);
        let err = b"HTTP/1.1 400 Bad Request\r\n\r\n{\"error\":\"database not found\"}";
        assert!(parse_response(err)
            .unwrap_err()
            .to_string()
            .contains("database not found"));
    }
}
