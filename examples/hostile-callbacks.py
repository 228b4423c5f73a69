#!/usr/bin/env python3
"""Measures what hostile callbacks cost the gateway: peak RSS and CPU time of `entrepot serve`
for one and for N concurrent 2 MB / 300 000-field unsigned forms with a fake signature, posted
to the sample platform's callback route.

    cargo build --release
    python3 examples/hostile-callbacks.py target/release/entrepot [--body-limit 4MiB] [N...]

With `--body-limit`, the sample platform's callback gets `limits: { body: ... }` (a copy of
its file in the temporary directory), so a body under that size is read and its fields are
counted instead of being refused at the size limit. N: the concurrency of each round
(default: 1 and 16).

It starts the given binary in a temporary directory (its own SQLite store, the repository's
`platforms/`, a free loopback port), waits for /healthz, then for each round reads
/proc/PID/status (VmHWM, VmRSS) and /proc/PID/stat (utime + stime) before and after posting.
Linux only; standard library only; nothing leaves 127.0.0.1.
"""

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROUTE = "/callbacks/yanxuan/notify"


def hostile_form():
    body = bytearray(b"sign=0123456789ABCDEF0123456789ABCDEF")
    body += b"&x=" * 300_000
    body += b"&pad="
    body += b"a" * (2_000_000 - len(body))
    return bytes(body)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line; 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(port, body, results):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("POST", ROUTE, body=body,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse()
        results.append((r.status, r.read()[:200]))
        c.close()
    except OSError as e:
        results.append((0, str(e).encode()))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    args = sys.argv[1:]
    binary = os.path.abspath(args.pop(0))
    body_limit = None
    if args[:1] == ["--body-limit"]:
        body_limit = args[1]
        args = args[2:]
    rounds = [int(n) for n in args] or [1, 16]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        platforms = os.path.join(repo, "platforms")
        if body_limit:
            platforms = os.path.join(d, "platforms")
            os.mkdir(platforms)
            with open(os.path.join(repo, "platforms", "yanxuan.yaml")) as f:
                text = f.read()
            marker = "  - path: /yanxuan/notify\n"
            assert marker in text
            text = text.replace(marker, marker + f"    limits: {{ body: {body_limit} }}\n", 1)
            with open(os.path.join(platforms, "yanxuan.yaml"), "w") as f:
                f.write(text)
        with open(os.path.join(d, "entrepot.yaml"), "w") as f:
            f.write(f"listen: 127.0.0.1:{port}\n"
                    f"store: {{ url: 'sqlite://{d}/gw.db' }}\n"
                    f"platforms_dir: {platforms}\n"
                    "reload: { watch: false }\n")
        env = dict(os.environ, ENTREPOT_CREDENTIAL_YANXUAN_APP_KEY="k",
                   ENTREPOT_CREDENTIAL_YANXUAN_APP_SECRET="s", RUST_LOG="error")
        proc = subprocess.Popen([binary, "serve", "--config", os.path.join(d, "entrepot.yaml")],
                                cwd=d, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/healthz")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.05)
            body = hostile_form()
            print(f"binary: {binary}" + (f", callback body limit {body_limit}" if body_limit else ""))
            print(f"body: {len(body)} bytes, 300 000 empty fields, fake signature")
            for n in rounds:
                hwm0, rss0, cpu0 = (status_kib(proc.pid, "VmHWM"),
                                    status_kib(proc.pid, "VmRSS"), cpu_seconds(proc.pid))
                results = []
                threads = [threading.Thread(target=post, args=(port, body, results))
                           for _ in range(n)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                time.sleep(0.5)
                hwm1, rss1, cpu1 = (status_kib(proc.pid, "VmHWM"),
                                    status_kib(proc.pid, "VmRSS"), cpu_seconds(proc.pid))
                statuses = sorted({s for s, _ in results})
                print(f"{n:>3} concurrent: answers {statuses} {results[0][1][:90]!r}")
                print(f"     CPU {cpu1 - cpu0:.2f} s, peak RSS {hwm0 // 1024} -> {hwm1 // 1024} MiB "
                      f"(+{(hwm1 - hwm0) // 1024} MiB), RSS after {rss0 // 1024} -> {rss1 // 1024} MiB")
            size = os.path.getsize(os.path.join(d, "gw.db"))
            wal = os.path.join(d, "gw.db-wal")
            size += os.path.getsize(wal) if os.path.exists(wal) else 0
            print(f"store on disk: {size // 1024} KiB")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
