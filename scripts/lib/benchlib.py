"""What the benchmark scripts share: free loopback ports and moto seeded with examples/."""
import json
import os
import socket
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.environ.get("MONINIT_VENV", os.path.join(REPO, ".venv"))
PY = os.path.join(VENV, "bin/python")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(path, prom, proxy, admin, extra=""):
    """Writes a `moninit run` config for the bench sources in moto (s3://bench/monitoring/,
    ssm:/monitoring/bench/), Grafana off, an AMP endpoint nobody answers."""
    with open(path, "w") as f:
        f.write(f"region: us-east-1\nsources: [s3://bench/monitoring/, ssm:/monitoring/bench/]\n"
                f"amp_endpoint: http://127.0.0.1:{free_port()}\ncluster: bench\nreplica: r1\n"
                f"prometheus:\n  listen: 127.0.0.1:{prom}\n  flush_deadline: 1s\n"
                f"grafana:\n  enabled: false\nproxy:\n  port: {proxy}\nadmin:\n  port: {admin}\n{extra}")


def start_moto_with_examples():
    """moto as S3 and SSM with examples/inputs in s3://bench/monitoring/ and
    ssm:/monitoring/bench/; returns (process, endpoint). Close its stdin to stop it."""
    moto = subprocess.Popen([PY, os.path.join(REPO, "tests/support/moto_stand_in.py"),
                             "--seed", os.path.join(REPO, "examples/inputs"), "--bucket", "bench", "--prefix", "monitoring/",
                             "--ssm-path", "/monitoring/bench/"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    return moto, json.loads(moto.stdout.readline())["endpoint"]
