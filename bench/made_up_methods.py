#!/usr/bin/env python3
"""What requests with made-up methods cost a server: its resident memory and the size of
/metrics, before and after N of them. Standard library only.

  bench/made_up_methods.py [BIN] [N] [LENGTH]

Starts BIN (default target/release/quotask) on a free loopback port with a fresh data
dir, sends one GET /healthz, reads VmRSS and the size of /metrics, then sends N requests
(default 10000) to /v1/tasks, each with a method of its own of LENGTH characters
(default 2000; each is answered 405), on a few keep-alive connections, waits two
seconds (the recorder folds samples every second) and reads both again.
"""

import http.client
import os
import random
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

CONNECTIONS = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def metrics_bytes(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 200:
        raise SystemExit(f"/metrics: HTTP {resp.status}")
    return len(body)


def flood(port, count, length, seed):
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    statuses = {}
    for _ in range(count):
        method = "".join(rng.choices(string.ascii_uppercase, k=length))
        conn.request(method, "/v1/tasks")
        resp = conn.getresponse()
        resp.read()
        statuses[resp.status] = statuses.get(resp.status, 0) + 1
        if resp.will_close:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.close()
    return statuses


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/release/quotask")
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    length = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    port = free_port()
    data = tempfile.mkdtemp(prefix="quotask-methods-")
    env = {"PATH": os.environ.get("PATH", ""), "QUOTASK_DATA_DIR": data,
           "QUOTASK_BIND": f"127.0.0.1:{port}", "RUST_LOG": "warn"}
    server = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 15
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.05)
        time.sleep(1)
        before = (rss_kib(server.pid), metrics_bytes(port))
        started = time.time()
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            shares = [total // CONNECTIONS + (i < total % CONNECTIONS) for i in range(CONNECTIONS)]
            results = list(pool.map(lambda i: flood(port, shares[i], length, i), range(CONNECTIONS)))
        took = time.time() - started
        statuses = {}
        for r in results:
            for k, v in r.items():
                statuses[k] = statuses.get(k, 0) + v
        time.sleep(2)
        after = (rss_kib(server.pid), metrics_bytes(port))
        print(f"binary: {binary}")
        print(f"{total} requests with made-up {length}-character methods in {took:.1f} s, statuses {statuses}")
        print(f"RSS:      {before[0] / 1024:8.1f} MiB -> {after[0] / 1024:8.1f} MiB")
        print(f"/metrics: {before[1] / 1024:8.1f} KiB -> {after[1] / 1024:8.1f} KiB")
    finally:
        server.terminate()
        server.wait(timeout=15)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
