#!/usr/bin/env python3
"""The create storm of the database fault tests (.ci/pg-outage.sh, .ci/pg-failover.sh).

  create_load.py OUT STOP_FILE LABEL|BASE_URL|TOKEN ...

One thread a client, each creating tasks back to back at BASE_URL with TOKEN until
STOP_FILE exists (pausing 50 ms after anything but a 201), and writing one JSON line
for each answer to OUT: the label (as `user`), base, start, end, status, Retry-After,
and the task id of a 201.
An answer that never came (a hang or a reset) is status 0. Standard library only.
"""
import json, os, sys, threading, time, urllib.error, urllib.request

out, stop_file = sys.argv[1:3]
clients = [arg.split("|") for arg in sys.argv[3:]]  # label|base|token
lock = threading.Lock()
log = open(out, "w")

def worker(user, base, token, n):
    i = 0
    while not os.path.exists(stop_file):
        i += 1
        req = urllib.request.Request(
            base + "/v1/tasks", method="POST",
            data=json.dumps({"content": f"{user} client {n} task {i}"}).encode(),
            headers={"content-type": "application/json", "authorization": "Bearer " + token})
        start = time.time()
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                status, headers, body = res.status, res.headers, res.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        except Exception as e:  # no answer at all: a hang or a reset
            status, headers, body = 0, {}, str(e).encode()
        end = time.time()
        record = {"user": user, "base": base, "start": start, "end": end, "status": status,
                  "retry_after": headers.get("retry-after"),
                  "id": json.loads(body)["id"] if status == 201 else None}
        with lock:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if status not in (201,):
            time.sleep(0.05)

threads = [threading.Thread(target=worker, args=(u, b, t, n)) for n, (u, b, t) in enumerate(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
