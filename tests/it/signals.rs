//! Signals are never lost: a SIGTERM at any moment (litestream starting in a crash loop, a
//! reload under way) stops the supervisor, and litestream never receives two SIGTERMs unless the
//! operator asked twice. A fake litestream (the real one cannot crash on cue) records each
//! SIGTERM it gets.

use std::time::{Duration, Instant};

use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const ITERATIONS: usize = 15;

/// A fake litestream that notes `PID start` and `PID term` in `terms`, takes 100 ms to exit
/// after SIGTERM, and in `crash` mode exits 1 after 30 ms (before it could be ready).
fn fake(env: &TestEnv, crash: bool) -> std::path::PathBuf {
    let terms = env.path("terms");
    let life = if crash {
        "sleep 0.03 & wait $!; exit 1"
    } else {
        "while :; do sleep 0.01 & wait $!; done"
    };
    fake_litestream(
        env,
        if crash { "fake-crash" } else { "fake-steady" },
        &format!(
            "echo \"$$ start\" >> {t}\ntrap 'echo \"$$ term\" >> {t}; sleep 0.1; exit 0' TERM\n{life}",
            t = terms.display()
        ),
    )
}

/// Every litestream started got at most one SIGTERM and is gone.
fn check_terms(env: &TestEnv, what: &str) {
    let text = std::fs::read_to_string(env.path("terms")).unwrap_or_default();
    let mut per_pid = std::collections::BTreeMap::<u32, usize>::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(pid), Some(event)) = (f.next(), f.next()) else {
            continue;
        };
        let pid: u32 = pid.parse().unwrap();
        let n = per_pid.entry(pid).or_default();
        if event == "term" {
            *n += 1;
        }
    }
    for (pid, terms) in &per_pid {
        assert!(
            *terms <= 1,
            "{what}: litestream {pid} got {terms} SIGTERMs:\n{text}"
        );
        assert!(!alive(*pid), "{what}: litestream {pid} is still running");
    }
}

fn setup(env: &TestEnv, comment: &str) {
    let yaml = config_yaml(
        env,
        &format!("# {comment}\nsocket:\n  enabled: false\n"),
        "",
    );
    save_config(env, &yaml);
}

fn pause_ms(max: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    Duration::from_millis(nanos % (max + 1))
}

#[test]
fn a_sigterm_at_any_moment_of_a_crash_loop_stops_the_supervisor() {
    let _turn = crate::support::heavy();
    let env = TestEnv::new();
    setup(&env, "crash loop");
    let fake = fake(&env, true);
    for i in 0..ITERATIONS {
        let _ = std::fs::remove_file(env.path("terms"));
        let mut sup = run_bg(
            &env,
            &[
                "--litestream",
                fake.to_str().unwrap(),
                "--retry-start",
                "--backoff-initial",
                "10ms",
                "--backoff-max",
                "40ms",
                "--grace",
                "3s",
            ],
        );
        wait_for("the crash loop", Duration::from_secs(30), || {
            std::fs::read_to_string(env.path("terms")).is_ok_and(|t| t.lines().count() >= 2)
        });
        std::thread::sleep(pause_ms(100));
        let asked = Instant::now();
        sup.signal("TERM");
        let code = sup.wait_code(Duration::from_secs(30));
        assert!(code.is_some(), "iteration {i}: the supervisor kept running");
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "iteration {i}: the stop took {:?}",
            asked.elapsed()
        );
        check_terms(&env, &format!("crash loop, iteration {i}"));
    }
}

#[test]
fn a_sigterm_right_after_a_reloading_sighup_stops_with_one_sigterm_to_litestream() {
    let _turn = crate::support::heavy();
    let env = TestEnv::new();
    setup(&env, "generation 0");
    let fake = fake(&env, false);
    for i in 0..ITERATIONS {
        let _ = std::fs::remove_file(env.path("terms"));
        let _ = std::fs::remove_file(env.path("run.err"));
        let mut sup = run_bg(
            &env,
            &[
                "--litestream",
                fake.to_str().unwrap(),
                "--reload-check",
                "0",
            ],
        );
        wait_for("ready", Duration::from_secs(30), || {
            run_stderr(&env).contains("litestream ready")
        });
        setup(&env, &format!("generation {}", i + 1));
        sup.signal("HUP");
        std::thread::sleep(pause_ms(5));
        sup.signal("TERM");
        let code = sup.wait_code(Duration::from_secs(30));
        assert_eq!(code, Some(0), "iteration {i}:\n{}", run_stderr(&env));
        check_terms(&env, &format!("reload, iteration {i}"));
    }
}
