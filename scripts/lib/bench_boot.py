#!/usr/bin/env python3
"""scripts/bench boot: time from `moninit run` to READY=1 (sd_notify) for examples/ against
local moto, split by phase (from moninit's own /metrics), beside the time Debian's
Prometheus alone takes from exec to /-/ready with the same flags; and moninit's RSS with
Prometheus running and the proxy idle. All in one run, BENCH_RUNS (default 10) times each.
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import free_port, run_config, start_moto_with_examples  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.environ.get("MONINIT_VENV", os.path.join(REPO, ".venv"))
MONINIT = sys.argv[1]
RUNS = int(os.environ.get("BENCH_RUNS", "10"))



def ready(url):
    try:
        return urllib.request.urlopen(url, timeout=0.5).status == 200
    except Exception:  # noqa: BLE001
        return False


def main():
    moto, endpoint = start_moto_with_examples()
    work = tempfile.mkdtemp(prefix="moninit-bench-boot-")
    totals, phases, alone, rss = [], {}, [], []
    try:
        for i in range(RUNS):
            root = os.path.join(work, f"root{i}")
            prom, proxy, admin = free_port(), free_port(), free_port()
            config = os.path.join(work, "moninit.yaml")
            run_config(config, prom, proxy, admin)
            sock_path = os.path.join(work, f"notify{i}.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(sock_path)
            sock.settimeout(60)
            env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                       AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
                       AWS_SHARED_CREDENTIALS_FILE="/dev/null", NOTIFY_SOCKET=sock_path, RUST_LOG="warn")
            t0 = time.perf_counter()
            p = subprocess.Popen([MONINIT, "run", "--config", config, "--root", root], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while b"READY=1" not in sock.recv(4096):
                pass
            totals.append(time.perf_counter() - t0)
            sock.close()
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
            for line in metrics.splitlines():
                if line.startswith("moninit_boot_phase_seconds{"):
                    name = line.split('"')[1]
                    phases.setdefault(name, []).append(float(line.rsplit(" ", 1)[1]))
            time.sleep(3)
            with open(f"/proc/{p.pid}/status") as f:
                rss.append(next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024)
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)

            # Prometheus alone, same flags, same rendered config.
            rendered = os.path.join(root, "etc/moninit/rendered/prometheus/prometheus.yml")
            port = free_port()
            t0 = time.perf_counter()
            q = subprocess.Popen(["prometheus", f"--config.file={rendered}", f"--web.listen-address=127.0.0.1:{port}",
                                  "--web.enable-lifecycle", "--enable-feature=agent",
                                  f"--storage.agent.path={os.path.join(work, f'alone{i}')}", "--storage.remote.flush-deadline=1s"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while not ready(f"http://127.0.0.1:{port}/-/ready"):
                time.sleep(0.002)
            alone.append(time.perf_counter() - t0)
            q.send_signal(signal.SIGTERM)
            q.wait(timeout=30)
        med = statistics.median
        print(f"moninit run → READY=1 (examples/ via local moto), median of {RUNS}: {med(totals) * 1000:.0f} ms "
              f"(min {min(totals) * 1000:.0f})")
        for name in ("fetch", "render", "validate", "install", "proxy", "prometheus", "total"):
            if name in phases:
                print(f"  phase {name:<10} median {med(phases[name]) * 1000:7.1f} ms")
        print(f"Prometheus alone, exec → /-/ready, median of {RUNS}: {med(alone) * 1000:.0f} ms (min {min(alone) * 1000:.0f})")
        print(f"moninit adds (median total − median Prometheus alone): {(med(totals) - med(alone)) * 1000:.0f} ms")
        print(f"moninit RSS with Prometheus running and the proxy idle: median {med(rss):.1f} MiB (max {max(rss):.1f})")
    finally:
        moto.stdin.close()
        moto.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
