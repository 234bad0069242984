//! `GET /metrics` on the health listener, read by prometheus-client's own text parser (installed
//! into `.tools/prometheus-client` by scripts/install-deps.sh) while the real litestream
//! replicates; and the listener's manners: 405 for other methods, 431 for huge headers, and a
//! flood of idle connections that neither takes it down nor keeps `/healthz` from answering.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const LONG: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP exchange: (status code, head, body); `None` when the connection failed or was closed
/// without an answer.
fn http(port: u16, request: &str) -> Option<(u16, String, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, head.to_string(), body.to_string()))
}

fn request(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
}

/// A sample: (name, labels, value).
type Sample = (String, serde_json::Map<String, serde_json::Value>, f64);

/// `text` through `prometheus_client.parser.text_string_to_metric_families`; panics when it
/// does not parse.
fn parse(text: &str) -> Vec<Sample> {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/prometheus-client");
    assert!(
        tools.join("prometheus_client/parser.py").exists(),
        "prometheus-client missing: run scripts/install-deps.sh"
    );
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("PYTHONPATH", &tools)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client cannot parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    v
}

/// The value of `name` whose labels include every pair of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).and_then(|x| x.as_str()) == Some(v))
        })
        .map(|s| s.2)
}

fn scrape(port: u16) -> Vec<Sample> {
    let (code, head, body) = http(port, &request("GET", "/metrics")).expect("/metrics answers");
    assert_eq!(code, 200, "{head}\n{body}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    parse(&body)
}

/// `replicated_txid` of the only database in `status --json`.
fn status_txid(env: &TestEnv) -> Option<f64> {
    let r = env.run(["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(r.stdout().trim()).ok()?;
    v["databases"][0]["replicated_txid"].as_f64()
}

#[test]
fn metrics_parse_and_follow_replication_the_lock_and_restarts() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 10);
    save_config(&env, &config_yaml(&env, "", ""));
    let port = free_port();
    let mut sup = run_bg(&env, &["--health-addr", &format!("127.0.0.1:{port}")]);
    wait_ready(&env);
    let db = std::fs::canonicalize(env.db())
        .unwrap()
        .display()
        .to_string();
    let dbl = [("db", db.as_str())];

    // The replicated txid is the one `status --json` reports (both change with each poll: the
    // two are read until they agree).
    let mut first = 0.0;
    wait_for(
        "metrics and status agree on the replicated txid",
        LONG,
        || {
            let before = status_txid(&env);
            let m = value(&scrape(port), "rip_litestream_db_replicated_txid", &dbl);
            let after = status_txid(&env);
            match (before, m, after) {
                (Some(b), Some(m), Some(a)) if b == m || a == m => {
                    first = m;
                    m > 0.0
                }
                _ => false,
            }
        },
    );
    let s = scrape(port);
    assert_eq!(
        value(&s, "rip_litestream_state", &[("state", "ready")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rip_litestream_state", &[("state", "backoff")]),
        Some(0.0)
    );
    assert_eq!(value(&s, "rip_litestream_ready", &[]), Some(1.0));
    assert_eq!(value(&s, "rip_litestream_db_restorable", &dbl), Some(1.0));
    assert_eq!(value(&s, "rip_litestream_restarts_total", &[]), Some(0.0));
    for source in ["litestream", "stderr", "log_db"] {
        assert_eq!(
            value(
                &s,
                "rip_litestream_log_lines_dropped_total",
                &[("source", source)]
            ),
            Some(0.0),
            "{source}"
        );
    }
    assert!(value(&s, "rip_litestream_config_generation", &[]).is_some_and(|g| g >= 1.0));
    assert_eq!(
        value(&s, "rip_litestream_config_generation_rejected", &[]),
        Some(0.0)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut synced = 0.0;
    wait_for("a last sync in /metrics", LONG, || {
        let s = scrape(port);
        value(&s, "rip_litestream_db_last_sync_timestamp_seconds", &dbl)
            .map(|t| synced = t)
            .is_some()
    });
    assert!((now - synced).abs() < 60.0, "{synced} vs {now}");
    assert!(
        value(
            &scrape(port),
            "rip_litestream_db_last_sync_age_seconds",
            &dbl
        )
        .unwrap()
            < 60.0
    );
    wait_for("the WAL read lock metric at 1", LONG, || {
        value(&scrape(port), "rip_litestream_db_wal_read_lock", &dbl) == Some(1.0)
    });

    insert(&env.db(), 10, 20);
    wait_for("the replicated txid grows after more writes", LONG, || {
        value(&scrape(port), "rip_litestream_db_replicated_txid", &dbl).is_some_and(|t| t > first)
    });

    let child = children_of(sup.pid())[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("restarts_total 1 and ready again", LONG, || {
        let s = scrape(port);
        value(&s, "rip_litestream_restarts_total", &[]) == Some(1.0)
            && value(&s, "rip_litestream_state", &[("state", "ready")]) == Some(1.0)
    });
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    assert_eq!(rows(&env.db()).len(), 20);
}

/// Open descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn the_health_listener_refuses_other_methods_and_survives_a_flood_of_idle_clients() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &config_yaml(&env, "", ""));
    let port = free_port();
    let mut sup = run_bg(&env, &["--health-addr", &format!("127.0.0.1:{port}")]);
    wait_ready(&env);
    let base = fds(sup.pid());

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/healthz", "/metrics", "/nope"] {
            let (code, head, _) = http(port, &request(method, path)).unwrap();
            assert_eq!(code, 405, "{method} {path}: {head}");
            assert!(head.contains("\r\nAllow: GET, HEAD"), "{head}");
        }
    }
    let (code, head, body) = http(port, &request("HEAD", "/metrics")).unwrap();
    assert_eq!((code, body.as_str()), (200, ""), "{head}");
    assert!(head.contains("Content-Length: "), "{head}");
    assert_eq!(http(port, &request("GET", "/nope")).unwrap().0, 404);
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(8192)
    );
    assert_eq!(http(port, &huge).map(|r| r.0), Some(431));

    // 100 clients connect and send nothing, once the requests above are done with (their
    // descriptors closed: the flood then meets a listener with every place free).
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_for("the requests above finished", LONG, || {
        fds(sup.pid()) <= base + 2
    });
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap())
        .collect();
    let mut most = 0;
    wait_for("/healthz answered despite the idle clients", LONG, || {
        most = most.max(fds(sup.pid()));
        http(port, &request("GET", "/healthz")).is_some_and(|r| r.0 == 200)
    });
    assert!(
        most <= base + 32 + 4,
        "descriptors grew from {base} to {most} with 100 idle clients"
    );
    // Each idle client was closed by the listener: at once beyond the bound, after the read
    // timeout within it.
    for c in &idle {
        c.set_read_timeout(Some(LONG)).unwrap();
        let mut b = [0u8; 1];
        let closed = match (&*c).read(&mut b) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        assert!(closed, "an idle client still connected after {LONG:?}");
    }
    drop(idle);
    assert_eq!(http(port, &request("GET", "/readyz")).unwrap().0, 200);

    // A client that trickles header lines forever is cut off (the deadline is for the whole
    // request, not for each read).
    let mut slow = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        while slow.write_all(b"X-Slow: 1\r\n").is_ok() {
            std::thread::sleep(Duration::from_millis(200)); // the client's pace
        }
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    wait_for("the trickling client cut off", LONG, || {
        done.load(std::sync::atomic::Ordering::SeqCst)
    });
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn metrics_report_the_last_verify_and_a_replica_that_cannot_be_restored_from() {
    let env = TestEnv::new();
    env.init();
    insert(&env.db(), 0, 50);
    let port = free_port();
    let mut sup = run_bg(
        &env,
        &[
            "--health-addr",
            &format!("127.0.0.1:{port}"),
            "--replica-check",
            "1s",
            "--verify-every",
            "1s",
        ],
    );
    wait_ready(&env);
    let db = std::fs::canonicalize(env.db())
        .unwrap()
        .display()
        .to_string();
    let dbl = [("db", db.as_str())];
    wait_for("a verify ok in /metrics, healthy", LONG, || {
        let s = scrape(port);
        value(
            &s,
            "rip_litestream_verify_outcome",
            &[("db", &db), ("outcome", "ok")],
        ) == Some(1.0)
            && value(&s, "rip_litestream_healthy", &[]) == Some(1.0)
    });
    let s = scrape(port);
    assert_eq!(
        value(
            &s,
            "rip_litestream_verify_outcome",
            &[("db", &db), ("outcome", "failed")]
        ),
        Some(0.0)
    );
    assert!(value(&s, "rip_litestream_verify_last_age_seconds", &dbl).is_some_and(|a| a < 60.0));
    assert!(value(&s, "rip_litestream_verify_last_timestamp_seconds", &dbl).is_some());

    // Objects lost: every file holding the first transaction is gone; litestream goes on
    // syncing new files. The metric says so for this database (one series, the same label).
    let lost: Vec<_> = walk(&env.path("replica"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("0000000000000001-"))
        })
        .collect();
    assert!(!lost.is_empty());
    for f in &lost {
        std::fs::remove_file(f).unwrap();
    }
    insert(&env.db(), 50, 60);
    wait_for(
        "restorable 0 and healthy 0",
        Duration::from_secs(60),
        || {
            let s = scrape(port);
            value(&s, "rip_litestream_db_restorable", &dbl) == Some(0.0)
                && value(&s, "rip_litestream_healthy", &[]) == Some(0.0)
        },
    );
    let series = scrape(port)
        .into_iter()
        .filter(|s| s.0 == "rip_litestream_db_restorable")
        .count();
    assert_eq!(series, 1, "one database, one series");
    sup.signal("TERM");
    sup.wait_code(LONG);
}

#[test]
fn awkward_database_paths_survive_the_parser_as_labels() {
    use restinpieces_litestream::status::{DbStatus, Outcome, State, Status, VerifyReport};
    let now = std::time::SystemTime::now();
    let paths = [
        "/data/plain.db",
        "/data/with \"quotes\".db",
        "/data/back\\slash.db",
        "/data/new\nline.db",
        "/data/ünï cödé {x=1}.db",
    ];
    let status = Status {
        state: State::Ready,
        ready_since: Some(now),
        databases: paths
            .iter()
            .enumerate()
            .map(|(i, p)| DbStatus {
                path: p.to_string(),
                status: "replicating".into(),
                last_sync_at: Some(now),
                txid: Some(100 + i as u64),
                replicated_txid: Some(100 + i as u64),
                read_lock: Some(i % 2 == 0),
            })
            .collect(),
        unrestorable: vec![paths[3].to_string()],
        last_verify: Some(VerifyReport {
            outcome: Outcome::Inconclusive,
            db: paths[1].into(),
            reason: "behind".into(),
            restored_txid: None,
            live_txid: None,
            lag_txids: Some(3),
            at: now,
        }),
        ..Status::default()
    };
    let s = parse(&restinpieces_litestream::health::metrics(&status));
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(
            value(&s, "rip_litestream_db_txid", &[("db", p)]),
            Some(100.0 + i as f64),
            "{p:?}"
        );
        assert_eq!(
            value(&s, "rip_litestream_db_wal_read_lock", &[("db", p)]),
            Some(if i % 2 == 0 { 1.0 } else { 0.0 })
        );
        assert_eq!(
            value(&s, "rip_litestream_db_restorable", &[("db", p)]),
            Some(if i == 3 { 0.0 } else { 1.0 })
        );
    }
    assert_eq!(
        value(
            &s,
            "rip_litestream_verify_outcome",
            &[("db", paths[1]), ("outcome", "inconclusive")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&s, "rip_litestream_healthy", &[]), Some(0.0));
}
