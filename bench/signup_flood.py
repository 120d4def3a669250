#!/usr/bin/env python3
"""Sign-in latency while a flood of sign-ups hangs up on the server.

Starts a quotask binary on a free loopback port with a data directory of its own,
signs up `taken` and `alice`, times `alice`'s sign-ins while nothing else runs, then
sends FLOOD sign-ups at once whose clients hang up right after sending, and times
`alice`'s sign-ins again while the server works through them. Standard library only.

    python3 bench/signup_flood.py BINARY [--flood 150] [--names taken|new] [--env K=V ...]

`--names taken` (default) signs up the taken name each time; `--names new` a new name
each time (what a name check cannot catch). `--env` adds settings, for instance
`QUOTASK_SIGNUPS_PER_HOUR=1000000` to see the server without its sign-up throttle.
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PASSWORD = "correct horse battery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


def sign_in_ms(port):
    started = time.perf_counter()
    status, _ = post(port, "/v1/auth/signin", {"username": "alice", "password": PASSWORD})
    took = (time.perf_counter() - started) * 1000
    if status != 200:
        raise SystemExit(f"alice's sign-in answered {status}")
    return took


def hang_up_sign_up(port, name, go):
    body = json.dumps({"username": name, "password": PASSWORD}).encode()
    head = (
        f"POST /v1/auth/signup HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    go.wait()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head + body)
        time.sleep(0.05)  # long enough for the request to be read and its work queued


def metric(port, name):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    lines = [l for l in text.splitlines() if l.startswith(name)]
    return "; ".join(lines) if lines else "(not exported)"


def summary(samples):
    ordered = sorted(samples)
    return f"n={len(ordered)} median {statistics.median(ordered):.1f} ms, max {ordered[-1]:.1f} ms"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--flood", type=int, default=150)
    parser.add_argument("--names", choices=["taken", "new"], default="taken")
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="signup-flood-")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTASK_")}
    env.update(QUOTASK_DATA_DIR=data, QUOTASK_BIND=f"127.0.0.1:{port}", RUST_LOG="warn")
    env.update(kv.split("=", 1) for kv in args.env)
    server = subprocess.Popen([args.binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        for name in ("taken", "alice"):
            status, body = post(port, "/v1/auth/signup", {"username": name, "password": PASSWORD})
            assert status == 201, (status, body)

        calm = [sign_in_ms(port) for _ in range(20)]

        go = threading.Event()
        names = ["taken" if args.names == "taken" else f"new{i}" for i in range(args.flood)]
        flood = [threading.Thread(target=hang_up_sign_up, args=(port, n, go)) for n in names]
        for t in flood:
            t.start()
        go.set()
        time.sleep(0.1)  # the flood is sent and its clients are hanging up
        during = [sign_in_ms(port) for _ in range(5)]
        for t in flood:
            t.join()

        print(f"binary: {args.binary}; flood: {args.flood} sign-ups of {args.names} names that hang up; env: {args.env}")
        print(f"sign-in, calm:         {summary(calm)}")
        print(f"sign-in, during flood: {summary(during)} (first {during[0]:.1f} ms)")
        print(f"hashes: {metric(port, 'quotask_password_hashes_total')}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
