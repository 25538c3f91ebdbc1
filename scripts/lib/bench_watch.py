#!/usr/bin/env python3
"""scripts/bench watch: what following the sources costs, against local moto.

1. A full fetch of 200 S3 objects and 500 SSM parameters (plus examples/inputs), as boot does
   it (`moninit render`; the fetch phase from its log), beside one idle watch round over
   the same sources (`moninit run`, from its metrics): wall time, API calls and bytes
   answered, both counted at moto. Goal: an idle round costs under 5% of a full fetch.
   Measured twice: with objects of 10 bytes (listing metadata is all a fetch carries: the
   worst case for the ratio), and, last, with objects of 16 KiB (a modest dashboard).
2. The time from an S3 change (a scrape config rewritten) to the new configuration applied
   and healthy (`/status` generation), median and max over 20 changes, with
   watch.interval_secs 5.
"""
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import PY, REPO, free_port, run_config  # noqa: E402

MONINIT = sys.argv[1]
CHANGES = int(os.environ.get("BENCH_CHANGES", "20"))


def calls(endpoint, method="GET"):
    req = urllib.request.Request(f"{endpoint}/__moninit/calls", method=method)
    return json.loads(urllib.request.urlopen(req).read())


def get(url):
    return urllib.request.urlopen(url, timeout=10).read().decode()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def put_scrape_config(endpoint, i):
    code = (f"import boto3\nboto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1', "
            f"aws_access_key_id='t', aws_secret_access_key='t').put_object(Bucket='bench', "
            f"Key='monitoring/prometheus/scrape_configs/changing.yml', "
            f"Body=b\"- job_name: changing-{i}\\n  static_configs:\\n    - targets: ['127.0.0.1:9']\\n\")")
    subprocess.run([PY, "-c", code], check=True)


def start(work, object_bytes):
    """moto with the bench sources (extra objects of `object_bytes` each), and the config of
    a `moninit run` against it; returns (moto, endpoint, env, config, admin port)."""
    moto = subprocess.Popen([PY, os.path.join(REPO, "tests/support/moto_stand_in.py"),
                             "--seed", os.path.join(REPO, "examples/inputs"), "--bucket", "bench",
                             "--prefix", "monitoring/", "--ssm-path", "/monitoring/bench/",
                             "--extra-objects", "200", "--extra-params", "500",
                             "--extra-object-bytes", str(object_bytes)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    endpoint = json.loads(moto.stdout.readline())["endpoint"]
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null", RUST_LOG="info")
    prom, proxy, admin = free_port(), free_port(), free_port()
    config = os.path.join(work, f"moninit-{object_bytes}.yaml")
    run_config(config, prom, proxy, admin, "watch:\n  interval_secs: 5\n")
    return moto, endpoint, env, config, admin


def idle_vs_full(work, object_bytes, keep_running=False):
    """Part 1: a full fetch (3 times) beside idle watch rounds (4), counted at moto. Returns
    the running (moto, run, endpoint, admin) when `keep_running`, for part 2."""
    moto, endpoint, env, config, admin = start(work, object_bytes)
    run = None
    try:
        # 1a. A full fetch, as boot does it.
        fulls = []
        for _ in range(3):
            calls(endpoint, "DELETE")
            out = subprocess.run([MONINIT, "render", "--config", config, "--out", os.path.join(work, "out")],
                                 env=env, capture_output=True, text=True, check=True)
            ms = float(re.search(r"ms=(\d+) fetched inputs", out.stderr + out.stdout).group(1))
            counted = calls(endpoint)
            fulls.append((ms, sum(v for k, v in counted.items() if k != "bytes"), counted.get("bytes", 0)))
        full_ms = statistics.median(f[0] for f in fulls)
        full_calls, full_bytes = fulls[-1][1], fulls[-1][2]

        # 1b. Idle rounds, once the first (full) round is done.
        run = subprocess.Popen([MONINIT, "run", "--config", config, "--root", os.path.join(work, f"root-{object_bytes}")],
                               env=env, stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(work, f"run-{object_bytes}.log"), "w"))
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if metric(get(f"http://127.0.0.1:{admin}/metrics"), "moninit_config_watch_rounds_total") >= 1:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            sys.exit("no watch round within 120 s")
        rounds0 = metric(get(f"http://127.0.0.1:{admin}/metrics"), "moninit_config_watch_rounds_total")
        calls(endpoint, "DELETE")
        idle_seconds = []
        while True:
            m = get(f"http://127.0.0.1:{admin}/metrics")
            n = metric(m, "moninit_config_watch_rounds_total")
            if n > rounds0 + len(idle_seconds):
                idle_seconds.append(metric(m, "moninit_config_watch_round_seconds"))
            if len(idle_seconds) >= 4:
                break
            time.sleep(0.05)
        counted = calls(endpoint)
        rounds = len(idle_seconds)
        idle_calls = sum(v for k, v in counted.items() if k != "bytes") / rounds
        idle_bytes = counted.get("bytes", 0) / rounds
        idle_ms = statistics.median(idle_seconds) * 1000
        print(f"200 S3 objects of {object_bytes} B + 500 SSM parameters (plus examples/inputs), local moto:")
        print(f"  full fetch (boot, median of 3): {full_ms:7.0f} ms  {full_calls:4d} calls  {full_bytes / 1024:7.1f} KiB")
        print(f"  idle watch round (median of {rounds}): {idle_ms:7.1f} ms  {idle_calls:4.0f} calls  {idle_bytes / 1024:7.1f} KiB"
              f"   ({json.dumps({k: v // rounds for k, v in counted.items() if k != 'bytes'})} per round)")
        print(f"  idle round / full fetch: time {idle_ms / full_ms * 100:.1f}%, calls {idle_calls / full_calls * 100:.1f}%, "
              f"bytes {idle_bytes / full_bytes * 100:.1f}%   (goal: under 5%)")
        if keep_running:
            return moto, run, endpoint, admin
    except BaseException:
        keep_running = False
        raise
    finally:
        if not keep_running:
            if run:
                run.send_signal(signal.SIGTERM)
                run.wait(timeout=30)
            moto.stdin.close()
            moto.kill()
    return None


def main():
    work = tempfile.mkdtemp(prefix="moninit-bench-watch-")
    moto = run = None
    try:
        # Objects of a few bytes: listing metadata is all there is to fetch (the worst case).
        moto, run, endpoint, admin = idle_vs_full(work, 10, keep_running=True)

        # 2. Change to applied and healthy.
        took = []
        for i in range(CHANGES):
            generation = json.loads(get(f"http://127.0.0.1:{admin}/status"))["generation"]
            put_scrape_config(endpoint, i)
            t0 = time.perf_counter()
            while json.loads(get(f"http://127.0.0.1:{admin}/status"))["generation"] <= generation:
                if time.perf_counter() - t0 > 60:
                    sys.exit(f"change {i} not applied within 60 s")
                time.sleep(0.02)
            took.append(time.perf_counter() - t0)
        print(f"S3 change → applied and healthy, watch.interval_secs 5 (±20%), {CHANGES} changes: "
              f"median {statistics.median(took):.2f} s, max {max(took):.2f} s")
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
        moto.stdin.close()
        moto.kill()
        moto = run = None
        # Objects the size of a modest dashboard (16 KiB).
        idle_vs_full(work, 16384)
    finally:
        if run:
            run.send_signal(signal.SIGTERM)
            run.wait(timeout=30)
        if moto:
            moto.stdin.close()
            moto.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
