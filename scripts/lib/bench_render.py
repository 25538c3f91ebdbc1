#!/usr/bin/env python3
"""scripts/bench render: moninit's fetch+render+validate+install against local moto, beside
the same fetch done the way user-data scripts do it today (an `aws` CLI loop).

Both sides run against the same moto server in the same run; times are wall-clock per whole
command (process start to exit), reported as median and min over the runs.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.environ.get("MONINIT_VENV", os.path.join(REPO, ".venv"))


def start_moto(extra_params=0, extra_objects=0):
    cmd = [os.path.join(VENV, "bin/python"), os.path.join(REPO, "tests/support/moto_stand_in.py"),
           "--seed", os.path.join(REPO, "examples/inputs"), "--bucket", "bench", "--prefix", "monitoring/",
           "--ssm-path", "/monitoring/bench/", "--extra-params", str(extra_params),
           "--extra-objects", str(extra_objects), "--lifetime", "1800"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    info = json.loads(proc.stdout.readline())
    return proc, info["endpoint"]


def env_for(endpoint):
    env = dict(os.environ)
    for k in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "RUST_LOG"):
        env.pop(k, None)
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_DEFAULT_REGION="us-east-1", RUST_LOG="warn")
    return env


def timed(cmd, env, runs, shell=False):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            sys.exit(f"command failed: {cmd}\n{r.stderr.decode()}")
    return times


def cli_loop_script(out):
    aws = shutil.which("aws") or os.path.join(VENV, "bin/aws")
    return f"""set -e
mkdir -p {out}
for key in $({aws} s3api list-objects-v2 --bucket bench --prefix monitoring/ --query 'Contents[].Key' --output text); do
  mkdir -p "{out}/$(dirname "$key")"
  {aws} s3 cp --quiet "s3://bench/$key" "{out}/$key"
done
{aws} ssm get-parameters-by-path --path /monitoring/bench --recursive --with-decryption --output json > {out}/params.json
"""


def case(name, moninit, extra_params, extra_objects, runs, cli_runs):
    proc, endpoint = start_moto(extra_params, extra_objects)
    try:
        env = env_for(endpoint)
        work = tempfile.mkdtemp(prefix="moninit-bench-")
        config = os.path.join(work, "moninit.yaml")
        with open(config, "w") as f:
            f.write("region: us-east-1\nsources: [s3://bench/monitoring/, ssm:/monitoring/bench/]\n"
                    "cluster: bench\nreplica: r1\n")
        # First run installs everything; later runs fetch, render and validate everything and
        # find every file unchanged, as a reboot would. A fresh output dir per run measures
        # the full install: both are reported.
        fresh = [0]

        def fresh_cmd():
            fresh[0] += 1
            return [moninit, "render", "--config", config, "--out", os.path.join(work, f"out{fresh[0]}")]

        t_fresh = []
        for _ in range(runs):
            t_fresh += timed(fresh_cmd(), env, 1)
        t_again = timed([moninit, "render", "--config", config, "--out", os.path.join(work, "out1")], env, runs)
        t_cli = timed(cli_loop_script(os.path.join(work, "cli")), env, cli_runs, shell=True)
        med = statistics.median
        print(f"\n{name}: {extra_params} extra SSM parameters, {extra_objects} extra S3 objects")
        print(f"  moninit render, fresh dir     median {med(t_fresh)*1000:8.1f} ms  min {min(t_fresh)*1000:8.1f} ms  (n={runs})")
        print(f"  moninit render, all unchanged median {med(t_again)*1000:8.1f} ms  min {min(t_again)*1000:8.1f} ms  (n={runs})")
        print(f"  aws CLI loop (fetch only)     median {med(t_cli)*1000:8.1f} ms  min {min(t_cli)*1000:8.1f} ms  (n={cli_runs})")
        print(f"  ratio CLI loop / moninit (medians, fresh): {med(t_cli)/med(t_fresh):.1f}x")
        shutil.rmtree(work, ignore_errors=True)
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()


def main():
    moninit = sys.argv[1]
    runs = int(os.environ.get("BENCH_RUNS", "10"))
    case("examples/", moninit, 0, 0, runs, 3)
    case("large input", moninit, 500, 200, runs, 1)


if __name__ == "__main__":
    main()
