#!/usr/bin/env python3
"""scripts/bench archives: `moninit run` to READY=1 with Prometheus, Grafana and the AMP
plugin provisioned from pinned archives in local moto, beside the same boot with the binaries
already on PATH, in one run:

  - PATH boot: no archives, `prometheus` and `grafana` (the stand-in) on PATH;
  - cold boot: archives pinned, empty store (download + verify + unpack each);
  - warm boot: archives pinned, store already filled by a cold boot (no download).

Archives have realistic sizes: Prometheus is Debian's real prometheus + promtool (about 98 MB
unpacked); Grafana's tree holds the stand-in plus an 80 MB public/ of incompressible-ish
assets in 800 files; the plugin zip holds a 48 MB executable (promtool's bytes).
Also reports moninit's download+verify+unpack throughput per archive (from its own log)
beside `sha256sum` + `tar -xzf` (or `unzip`) of the same file in the same run.
BENCH_RUNS (default 5) boots of each kind.
"""
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

from benchlib import free_port, start_moto_with_examples  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.environ.get("MONINIT_VENV", os.path.join(REPO, ".venv"))
PY = os.path.join(VENV, "bin/python")
MONINIT = sys.argv[1]
RUNS = int(os.environ.get("BENCH_RUNS", "5"))



def stand_in_script():
    return f"#!/bin/sh\nexec {PY} {os.path.join(REPO, 'tests/support/grafana_stand_in.py')} \"$@\"\n".encode()


def add(tar, name, data, mode):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def build(work):
    prom = os.path.join(work, "prometheus-2.42.0.linux-amd64.tar.gz")
    with tarfile.open(prom, "w:gz", compresslevel=6) as t:
        for b in ("prometheus", "promtool"):
            t.add(shutil.which(b), arcname=f"prometheus-2.42.0.linux-amd64/{b}")
    graf = os.path.join(work, "grafana-12.1.0.linux-amd64.tar.gz")
    rng = random.Random(7)
    with tarfile.open(graf, "w:gz", compresslevel=6) as t:
        add(t, "grafana-12.1.0/bin/grafana", stand_in_script(), 0o755)
        add(t, "grafana-12.1.0/conf/defaults.ini", b"[paths]\n", 0o644)
        for i in range(800):
            # Half random, half repetitive: compresses about like minified JavaScript.
            chunk = rng.randbytes(50_000) + b"function(){return this}" * 2_200
            add(t, f"grafana-12.1.0/public/build/{i:04d}.js", chunk, 0o644)
    plugin = os.path.join(work, "grafana-amazonprometheus-datasource.zip")
    pid = "grafana-amazonprometheus-datasource"
    with zipfile.ZipFile(plugin, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{pid}/plugin.json", json.dumps({"id": pid, "type": "datasource", "backend": True}))
        info = zipfile.ZipInfo(f"{pid}/gpx_amazonprometheus_linux_amd64")
        info.external_attr = 0o100755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, open(shutil.which("promtool"), "rb").read())
    return {"prometheus": prom, "grafana": graf, "plugin": plugin}


def sha256(path):
    return subprocess.run(["sha256sum", path], capture_output=True, text=True, check=True).stdout.split()[0]


def boot(work, name, config_body, env, path_dir):
    """One `moninit run` to READY=1; returns (seconds, log text) and stops it."""
    root = os.path.join(work, f"root-{name}")
    prom, proxy, admin, graf = free_port(), free_port(), free_port(), free_port()
    config = os.path.join(work, f"{name}.yaml")
    with open(config, "w") as f:
        f.write(f"region: us-east-1\nsources: [s3://bench/monitoring/, ssm:/monitoring/bench/]\n"
                f"amp_endpoint: http://127.0.0.1:{free_port()}\ncluster: bench\nreplica: r1\n"
                f"prometheus:\n  listen: 127.0.0.1:{prom}\n  flush_deadline: 1s\n{config_body['prometheus']}"
                f"grafana:\n  enabled: true\n  http_port: {graf}\n{config_body['grafana']}"
                f"proxy:\n  port: {proxy}\nadmin:\n  port: {admin}\n")
    sock_path = os.path.join(work, f"notify-{name}-{time.monotonic_ns()}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(120)
    log = os.path.join(work, f"{name}.log")
    run_env = dict(env, NOTIFY_SOCKET=sock_path, PATH=path_dir, RUST_LOG="info")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        p = subprocess.Popen([MONINIT, "run", "--config", config, "--root", root], env=run_env,
                             stdout=out, stderr=out)
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
        except socket.timeout:
            p.kill()
            raise SystemExit(f"{name}: no READY=1:\n{open(log).read()}")
        took = time.perf_counter() - t0
        sock.close()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    return took, open(log).read(), root


def main():
    moto, endpoint = start_moto_with_examples()
    work = tempfile.mkdtemp(prefix="moninit-bench-archives-")
    try:
        archives = build(work)
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                   AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        upload = ("import boto3, sys\ns3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', "
                  "aws_access_key_id='b', aws_secret_access_key='b')\n"
                  "for p in sys.argv[2:]:\n    s3.put_object(Bucket='bench', Key='artifacts/' + p.rsplit('/', 1)[1], Body=open(p, 'rb').read())\n")
        subprocess.run([PY, "-c", upload, endpoint, *archives.values()], check=True)
        pins = {k: (f"s3://bench/artifacts/{os.path.basename(v)}", sha256(v)) for k, v in archives.items()}
        pinned = {
            "prometheus": f"  archive: {{url: \"{pins['prometheus'][0]}\", sha256: \"{pins['prometheus'][1]}\"}}\n",
            "grafana": f"  archive: {{url: \"{pins['grafana'][0]}\", sha256: \"{pins['grafana'][1]}\"}}\n"
                       f"  plugins:\n    - {{url: \"{pins['plugin'][0]}\", sha256: \"{pins['plugin'][1]}\"}}\n",
        }
        # PATH boot: Debian's prometheus + promtool, and the stand-in as `grafana`.
        path_bin = os.path.join(work, "path-bin")
        os.makedirs(path_bin)
        for b in ("prometheus", "promtool"):
            os.symlink(shutil.which(b), os.path.join(path_bin, b))
        with open(os.path.join(path_bin, "grafana"), "wb") as f:
            f.write(stand_in_script())
        os.chmod(os.path.join(path_bin, "grafana"), 0o755)
        empty_bin = os.path.join(work, "empty-bin")
        os.makedirs(empty_bin)

        path_boots, cold, warm, throughput = [], [], [], {}
        for i in range(RUNS):
            t, _, _ = boot(work, f"path{i}", {"prometheus": "", "grafana": ""}, env, path_bin)
            path_boots.append(t)
            t, log, root = boot(work, f"cold{i}", pinned, env, empty_bin)
            cold.append(t)
            for m in re.finditer(r'url=(\S+) sha256=\S+ bytes=(\d+) download_ms=(\d+) total_ms=(\d+)', log):
                throughput.setdefault(m.group(1), []).append((int(m.group(2)), int(m.group(4)), int(m.group(3))))
            # Warm: the same root again, its store filled.
            os.rename(root, os.path.join(work, f"root-warm{i}"))
            t, log, _ = boot(work, f"warm{i}", pinned, env, empty_bin)
            if "archive downloaded" in log:
                raise SystemExit(f"warm boot downloaded:\n{log}")
            warm.append(t)

        med = statistics.median
        print(f"moninit run → READY=1 with Prometheus and Grafana (stand-in), median of {RUNS} each:")
        print(f"  binaries on PATH                   {med(path_boots) * 1000:7.0f} ms")
        print(f"  archives, cold (download+unpack)   {med(cold) * 1000:7.0f} ms")
        print(f"  archives, warm (store hit)         {med(warm) * 1000:7.0f} ms  "
              f"= {med(warm) / med(path_boots):.2f}× the PATH boot")
        print("download + verify + unpack, per archive (moninit's own log), beside sha256sum + tar -xzf / unzip:")
        for url, runs in throughput.items():
            local = os.path.join(work, os.path.basename(url))
            size = os.path.getsize(local)
            tools = []
            for _ in range(RUNS):
                dest = tempfile.mkdtemp(dir=work)
                t0 = time.perf_counter()
                subprocess.run(["sha256sum", local], check=True, capture_output=True)
                if local.endswith(".zip"):
                    subprocess.run(["unzip", "-q", local, "-d", dest], check=True)
                else:
                    subprocess.run(["tar", "-xzf", local, "-C", dest], check=True)
                tools.append(time.perf_counter() - t0)
                shutil.rmtree(dest)
            total_ms = med([r[1] for r in runs])
            dl_ms = med([r[2] for r in runs])
            mb = size / 1e6
            print(f"  {os.path.basename(url):<44} {mb:6.1f} MB  moninit {mb / (total_ms / 1000):6.0f} MB/s "
                  f"({total_ms:.0f} ms, of which download+verify {dl_ms:.0f} ms)  "
                  f"tools {mb / med(tools):6.0f} MB/s ({med(tools) * 1000:.0f} ms)")
    finally:
        moto.stdin.close()
        moto.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
