#!/usr/bin/env python3
"""The window between litestream's death and the WAL guard, measured with the real binaries.

rip-litestream supervises litestream on one database while a writer on SQLite's defaults commits
about every millisecond; litestream is killed with SIGKILL N times (default 15). Prints the time
from each kill(2) to the guard's "WAL guard engaged" log line (min, median, p90, max), how many
kills found the WAL restarted in that window (each then forces a full snapshot), and the rows
restored against the rows written. usage: guard-gap.py [N]
Needs RIP_BIN (default target/release/rip-litestream) and LITESTREAM_BIN (default .tools/...).
"""
import datetime
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


def litestream_of(pid):
    for q in os.listdir("/proc"):
        if q.isdigit():
            try:
                with open(f"/proc/{q}/stat") as f:
                    st = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{q}/cmdline", "rb") as f:
                    cmd = f.read()
                if int(st[1]) == pid and st[0] != "Z" and b"replicate" in cmd:
                    return int(q)
            except OSError:
                pass
    return None


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    d = tempfile.mkdtemp()
    c = sqlite3.connect(f"{d}/app.db")
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t (x)")
    c.close()
    env = dict(os.environ, RIP_DB=f"{d}/app.db", RIP_AGE_KEY=f"{d}/age.key",
               RIP_RUNTIME_DIR=f"{d}/run", LITESTREAM_BIN=LS,
               RUST_LOG="restinpieces_litestream=debug")
    subprocess.run([RIP, "init", "--replica", f"{d}/replica"], env=env, check=True, capture_output=True)
    err = open(f"{d}/err", "w")
    sup = subprocess.Popen([RIP, "run", "--backoff-initial", "100ms", "--backoff-max", "200ms"],
                           env=env, stderr=err, stdout=err)
    stop = threading.Event()

    def writer():
        w = sqlite3.connect(f"{d}/app.db", isolation_level=None)
        w.execute("PRAGMA busy_timeout=5000")
        while not stop.is_set():
            w.execute("INSERT INTO t VALUES (1)")
            time.sleep(0.001)

    t = threading.Thread(target=writer)
    t.start()
    kills = []
    try:
        for _ in range(n):
            end = time.time() + 20
            while litestream_of(sup.pid) is None and time.time() < end:
                time.sleep(0.01)
            time.sleep(1.0)
            pid = litestream_of(sup.pid)
            kills.append(time.time())
            os.kill(pid, signal.SIGKILL)
        time.sleep(1)
    finally:
        stop.set()
        t.join()
        sup.send_signal(signal.SIGTERM)
        sup.wait(timeout=60)
    text = open(f"{d}/err").read()
    engaged = [datetime.datetime.fromisoformat(l.split()[0].replace("Z", "+00:00")).timestamp()
               for l in text.splitlines() if "litestream exited: WAL guard engaged" in l]
    gaps = sorted((e - k) * 1000 for k, e in zip(kills, engaged))
    print(f"{len(kills)} kills; ms from kill(2) to the guard held: min {gaps[0]:.1f}, median "
          f"{gaps[len(gaps) // 2]:.1f}, p90 {gaps[int(len(gaps) * 0.9)]:.1f}, max {gaps[-1]:.1f}")
    print("WAL restarted in the window (full snapshot forced):", text.count("the WAL was restarted"))
    subprocess.run([LS, "restore", "-o", f"{d}/restored.db", f"file://{d}/replica"], check=True,
                   capture_output=True)
    count = lambda p: sqlite3.connect(p).execute("SELECT count(*) FROM t").fetchone()[0]
    print(f"rows written {count(f'{d}/app.db')}, restored {count(f'{d}/restored.db')}")


if __name__ == "__main__":
    main()
