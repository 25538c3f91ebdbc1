#!/usr/bin/env python3
"""scripts/bench proxy: remote_write-shaped POSTs through `moninit proxy` to a local nginx
sink (204), beside the same load sent straight to the sink, in one run.

For each body size (1 KiB, 64 KiB, 1 MiB) and connection count (16, 256) it runs wrk for
BENCH_SECONDS (default 10) against the sink directly and through the proxy, and reports
requests/s, p50/p99 latency, the proxy's CPU time per request (utime+stime from /proc),
and its peak RSS. It also reports the proxy's idle RSS and, for the bound, the SHA-256 time
of each body size measured in this process with OpenSSL (hashlib). Last, one 1 MiB body
sent one byte per chunk (chunked encoding): the proxy's CPU time for it and its RSS growth.

The goals (issue 10) are printed beside the figures: CPU per request at most 25 us for 1 KiB,
SHA-256 + 35 us for 64 KiB, SHA-256 + 300 us for 1 MiB; peak RSS above idle after the 1 MiB x
256-connection load at most 1.2 x the bodies the busy slots hold (1 MiB x min(256, 128 slots)).

The sink's CPU per request on the direct run (nginx's one worker: the kernel's receive path
for the body plus nginx's own reading, which does nothing with it) is printed as `sink/req`:
a proxy receives every body the same way. wrk's CPU per request on the same direct run
(`send/req`: writing the body, and on loopback most of the kernel's TCP work for it) is what
sending it again costs. So `floor` = SHA-256 + sink/req + send/req is what any proxy on this
kernel spends per request before doing anything of its own, and `own` = CPU/req - floor.

BENCH_CASES=SIZE:CONNS,... runs only those cases (e.g. BENCH_CASES=1024:16,1048576:16).
"""
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import free_port  # noqa: E402

MONINIT = sys.argv[1]
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WS = "ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012"
TICK = os.sysconf("SC_CLK_TCK")
SLOTS = 128  # the proxy's default max_concurrent_requests
GOAL_OVER_SHA_US = {1024: 25, 64 * 1024: 35, 1024 * 1024: 300}
CASES = [tuple(int(x) for x in c.split(":")) for c in os.environ.get("BENCH_CASES", "").split(",") if c]



def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listening on {port}")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu_seconds(pid):
    """CPU seconds of `pid`'s children (nginx's workers)."""
    total = 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        for child in open(f"/proc/{pid}/task/{task}/children").read().split():
            total += cpu_seconds(int(child))
    return total


def status_kib(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def wrk(url, script, conns):
    before = os.times()
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{SECONDS}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    def dur(label):
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v if unit == "ms" else v * 1000
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"rps": rps, "p50": dur("50%"), "p99": dur("99%"), "requests": total, "cpu": cpu,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "errors": errors.group(1) if errors else ""}


def main():
    work = tempfile.mkdtemp(prefix="moninit-bench-proxy-")
    sink_port, proxy_port = free_port(), free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  client_max_body_size 4m;
  client_body_buffer_size 4m;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{sink_port};
    location / {{ return 204; }}
  }}
}}
""")
    sink = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"])
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDBENCH", AWS_SECRET_ACCESS_KEY="bench-secret",
               AWS_EC2_METADATA_DISABLED="true", RUST_LOG="warn")
    proxy = subprocess.Popen([MONINIT, "proxy", "--region", "us-east-1", "--upstream-url-scheme", "http",
                              "--host", f"127.0.0.1:{sink_port}", "--port", f"127.0.0.1:{proxy_port}"], env=env)
    try:
        wait_port(sink_port)
        wait_port(proxy_port)
        time.sleep(0.5)
        idle_rss = status_kib(proxy.pid, "VmRSS:")
        print(f"proxy idle RSS: {idle_rss / 1024:.1f} MiB   (wrk -t2, {SECONDS} s per run, 2 cores shared by wrk, proxy and sink)")
        # One 1 MiB body, one byte per chunk, before any load (so the peak is its own).
        size = 1024 * 1024
        wire = b"".join(b"1\r\n" + bytes([97 + i % 26]) + b"\r\n" for i in range(size)) + b"0\r\n\r\n"
        rss_before = status_kib(proxy.pid, "VmHWM:")
        before = cpu_seconds(proxy.pid)
        t = time.perf_counter()
        with socket.create_connection(("127.0.0.1", proxy_port)) as s:
            s.sendall((f"POST /workspaces/{WS}/api/v1/remote_write HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Content-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + wire)
            status = s.recv(64).split(b" ")[1].decode()
        took = time.perf_counter() - t
        cpu = cpu_seconds(proxy.pid) - before
        grew = (status_kib(proxy.pid, "VmHWM:") - rss_before) / 1024
        print(f"1 MiB in 1-byte chunks: status {status}, {took * 1000:.0f} ms wall, proxy CPU {cpu * 1000:.0f} ms, "
              f"peak RSS above idle {grew:.1f} MiB")
        print(f"{'body':>6} {'conns':>5} {'path':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU/req':>9} {'sha256':>7} {'CPU-sha':>8} {'goal':>6} {'non2xx':>6} {'sink/req':>9} {'send/req':>9} {'floor':>8} {'own':>7}")
        for size in (1024, 64 * 1024, 1024 * 1024):
            if CASES and not any(s == size for s, _ in CASES):
                continue
            body = os.urandom(size)
            t = time.perf_counter()
            n = 200 if size > 100000 else 2000
            for _ in range(n):
                hashlib.sha256(body).hexdigest()
            sha_us = (time.perf_counter() - t) / n * 1e6
            body_file = os.path.join(work, f"body-{size}")
            with open(body_file, "wb") as f:
                f.write(body)
            script = os.path.join(work, f"post-{size}.lua")
            with open(script, "w") as f:
                f.write(f"""local f = io.open("{body_file}", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/x-protobuf"
wrk.headers["Content-Encoding"] = "snappy"
wrk.headers["X-Prometheus-Remote-Write-Version"] = "0.1.0"
""")
            path = f"/workspaces/{WS}/api/v1/remote_write"
            for conns in (16, 256):
                if CASES and (size, conns) not in CASES:
                    continue
                sink_before = children_cpu_seconds(sink.pid)
                direct = wrk(f"http://127.0.0.1:{sink_port}{path}", script, conns)
                sink_us = (children_cpu_seconds(sink.pid) - sink_before) / max(direct["requests"], 1) * 1e6
                send_us = direct["cpu"] / max(direct["requests"], 1) * 1e6
                before = cpu_seconds(proxy.pid)
                through = wrk(f"http://127.0.0.1:{proxy_port}{path}", script, conns)
                cpu_us = (cpu_seconds(proxy.pid) - before) / max(through["requests"], 1) * 1e6
                label = f"{size // 1024}KiB" if size < 1048576 else "1MiB"
                if conns != 16:
                    label = ""
                over = cpu_us - (sha_us if size > 1024 else 0)
                goal = GOAL_OVER_SHA_US[size]
                print(f"{label:>6} {conns:>5} {'direct':>7} {direct['rps']:>9.0f} {direct['p50']:>8.2f} {direct['p99']:>8.2f} {'':>9} {'':>7} {'':>8} {'':>6} {direct['non2xx']:>6} {sink_us:>6.0f} us {send_us:>6.0f} us")
                floor = (sha_us if size > 1024 else 0) + sink_us + send_us
                print(f"{'':>6} {'':>5} {'proxy':>7} {through['rps']:>9.0f} {through['p50']:>8.2f} {through['p99']:>8.2f} {cpu_us:>6.0f} us {sha_us:>4.0f} us {over:>5.0f} us {'<=' + str(goal):>6} {through['non2xx']:>6} {'':>9} {'':>9} {floor:>5.0f} us {cpu_us - floor:>4.0f} us"
                      + (f"  socket errors: {through['errors']}" if through["errors"] else ""))
        peak = status_kib(proxy.pid, "VmHWM:") / 1024
        print(f"proxy peak RSS under load: {peak:.1f} MiB")
        if not CASES or (1024 * 1024, 256) in CASES:
            held = min(256, SLOTS)
            print(f"peak RSS above idle / bodies held by busy slots (1 MiB x {held}): "
                  f"{(peak - idle_rss / 1024) / held:.2f} (goal <= 1.2)")

    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=15)
        sink.send_signal(signal.SIGQUIT)
        sink.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
