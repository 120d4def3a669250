#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: a figure that does not
move with whatever else the machine is doing, unlike requests/s (bench/README.md,
"Instructions per request").

  bench/instructions.py BIN [BIN ...]       each binary in turn, on embedded SQLite

For each binary and route it starts the server under callgrind twice on a fresh data
dir, answers LOW and then HIGH requests one after the other on one keep-alive
connection, stops the server with SIGTERM and reads callgrind's total; the difference
divided by HIGH - LOW is what one more request costs, start-up and set-up cancelled out.
The server's own timers (checkpoints, caches, jobs) also run while it answers, so a
pair varies by some 10%: each figure is the median of REPEAT pairs, binaries alternating.
One connection and one request at a time means one create per group commit: the figure
is the work of a request, not of a busy server (run.sh measures that).
Needs valgrind (installed from Debian if missing). Standard library only.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

LOW, HIGH = int(os.environ.get("BENCH_LOW", 300)), int(os.environ.get("BENCH_HIGH", 1300))
REPEAT = int(os.environ.get("BENCH_REPEAT", 3))
PASSWORD = "bench-password-1234"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("server not ready in time")


def call(conn, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


ROUTES = {
    "create": ("POST", "/v1/tasks", {"content": "measured task"}, 201),
    "quota": ("GET", "/v1/me/quota", None, 200),
    "healthz": ("GET", "/healthz", None, 200),
}


def total_instructions(binary, route, n):
    data = tempfile.mkdtemp(prefix="quotask-instr.")
    out = os.path.join(data, "callgrind.out")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTASK_")}
    env.update(QUOTASK_BIND=f"127.0.0.1:{port}", QUOTASK_DATA_DIR=data, RUST_LOG="warn",
               QUOTASK_SIGNUPS_PER_HOUR="1000")
    try:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port, proc)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            status, body = call(conn, "POST", "/v1/auth/signup", {"username": "measured", "password": PASSWORD})
            assert status == 201, (status, body)
            subprocess.run([binary, "user", "set-limit", "measured", "1000000"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            status, body = call(conn, "POST", "/v1/auth/signin", {"username": "measured", "password": PASSWORD})
            assert status == 200, (status, body)
            token = json.loads(body)["access_token"]
            method, path, payload, expect = ROUTES[route]
            for _ in range(n):
                status, body = call(conn, method, path, payload, token)
                assert status == expect, (status, body)
            conn.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        with open(out) as f:
            text = f.read()
        m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
        return int(m.group(1))
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main():
    if shutil.which("valgrind") is None:
        subprocess.run(["apt-get", "install", "-y", "valgrind"], check=True)
    binaries = sys.argv[1:] or ["target/release/quotask"]
    print(f"instructions per request (callgrind; {HIGH} - {LOW} requests, one connection, one at a time; median of {REPEAT})")
    print(f"{'route':10} " + " ".join(f"{os.path.relpath(b):>28}" for b in binaries))
    for route in ROUTES:
        runs = {b: [] for b in binaries}
        for _ in range(REPEAT):
            for b in binaries:
                low, high = total_instructions(b, route, LOW), total_instructions(b, route, HIGH)
                runs[b].append((high - low) / (HIGH - LOW))
        row = [sorted(runs[b])[len(runs[b]) // 2] for b in binaries]
        spread = " ".join(f"[{min(runs[b]):,.0f}..{max(runs[b]):,.0f}]" for b in binaries)
        print(f"{route:10} " + " ".join(f"{v:28,.0f}" for v in row) + f"   {spread}", flush=True)


if __name__ == "__main__":
    main()
