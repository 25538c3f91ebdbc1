#!/usr/bin/env python3
"""scripts/bench amp: `moninit amp sync` with 50 rule files against local moto (AMP's rule
groups namespaces), beside `moninit check` on the same inputs (fetch, render and every
check, the part of a sync that does not talk to AMP).

- a full create: 50 namespaces into an empty workspace (3 runs, 3 fresh workspaces);
- a no-op sync: nothing changed (5 runs), with the calls moto served by HTTP method: a no-op
  must make read calls (GET) only.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import PY, REPO

MONINIT = sys.argv[1]
FILES = int(os.environ.get("BENCH_RULE_FILES", "50"))
RULES_PER_FILE = 10


def rule_file(i):
    lines = [f"groups:\n  - name: bench-{i}\n    rules:\n"]
    for r in range(RULES_PER_FILE):
        lines.append(f"      - alert: Bench{i}Rule{r}\n"
                     f"        expr: rate(http_requests_total{{job=\"app-{i}\",code=~\"5..\"}}[5m]) > {r}\n"
                     f"        for: 5m\n        labels: {{severity: page}}\n"
                     f"        annotations: {{summary: \"rule {r} of file {i}\"}}\n")
    return "".join(lines)


def calls(endpoint, method="GET"):
    req = urllib.request.Request(f"{endpoint}/__moninit/calls", method=method)
    return json.loads(urllib.request.urlopen(req).read())


def timed(cmd, env):
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return took, out.stdout


def main():
    work = tempfile.mkdtemp(prefix="moninit-bench-amp-")
    inputs = os.path.join(work, "inputs")
    shutil.copytree(os.path.join(REPO, "examples/inputs"), inputs)
    for i in range(FILES):
        path = os.path.join(inputs, f"prometheus/rules/team-{i % 5}/rules-{i:02d}.yml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(rule_file(i))
    moto = subprocess.Popen([PY, os.path.join(REPO, "tests/support/moto_stand_in.py"), "--amp-workspace"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    info = json.loads(moto.stdout.readline())
    endpoint = info["endpoint"]
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null", RUST_LOG="warn")

    def config(workspace):
        path = os.path.join(work, f"{workspace}.yaml")
        with open(path, "w") as f:
            f.write(f"region: us-east-1\nworkspace_id: {workspace}\nsources: [file://{inputs}/]\n"
                    f"cluster: bench\nreplica: r1\n")
        return path

    def new_workspace():
        code = ("import boto3\nprint(boto3.client('amp', endpoint_url='%s', region_name='us-east-1', "
                "aws_access_key_id='t', aws_secret_access_key='t').create_workspace()['workspaceId'])" % endpoint)
        return subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True).stdout.strip()

    try:
        checks = [timed([MONINIT, "check", "--config", config(info["amp_workspace"])], env)[0] for _ in range(3)]
        creates = []
        for i in range(3):
            ws = info["amp_workspace"] if i == 0 else new_workspace()
            calls(endpoint, "DELETE")
            took, out = timed([MONINIT, "amp", "sync", "--config", config(ws)], env)
            assert f"Plan: {FILES} to create" in out, out
            creates.append((took, calls(endpoint)))
        noops = []
        for _ in range(5):
            calls(endpoint, "DELETE")
            took, out = timed([MONINIT, "amp", "sync", "--config", config(info["amp_workspace"])], env)
            assert f"{FILES} unchanged" in out, out
            noops.append((took, calls(endpoint)))
    finally:
        moto.stdin.close()
        moto.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    def amp_calls(counted):
        return {k: v for k, v in counted.items() if k.endswith(" workspaces")}

    check_s = statistics.median(checks)
    create_s = statistics.median(t for t, _ in creates)
    noop_s = statistics.median(t for t, _ in noops)
    noop_calls = amp_calls(noops[-1][1])
    create_calls = amp_calls(creates[-1][1])
    writes = {k: v for k, v in noop_calls.items() if not k.startswith("GET ")}
    print(f"moninit amp sync, {FILES} rule files x {RULES_PER_FILE} rules, against local moto (wall time, median)")
    print(f"  moninit check (fetch, render, promtool, no AMP)   {check_s * 1000:8.0f} ms   (3 runs)")
    print(f"  full create ({FILES} namespaces)                     {create_s * 1000:8.0f} ms   (3 runs)  "
          f"AMP calls {sum(create_calls.values())} {create_calls}")
    print(f"  no-op sync                                         {noop_s * 1000:8.0f} ms   (5 runs)  "
          f"AMP calls {sum(noop_calls.values())} {noop_calls}")
    print(f"  no-op / full create: {noop_s / create_s:.2f}; AMP part of a no-op (sync - check): "
          f"{(noop_s - check_s) * 1000:.0f} ms")
    if writes:
        sys.exit(f"a no-op sync made write calls: {writes}")
    print("  a no-op sync made read calls only: ok")


if __name__ == "__main__":
    main()
