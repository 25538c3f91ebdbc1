#!/usr/bin/env python3
"""A stand-in child for supervision tests, accepting Prometheus' and Grafana's flags.

It serves /-/ready and /api/health on the address from --web.listen-address (Prometheus
style) once started, unless --never-ready. Behaviours, from the FAKE_CHILD environment
variable (comma-separated): exit-after=SECONDS, exit-code=N, ignore-term, never-ready,
orphan (double-forks a grandchild that outlives this process by one second),
fail-if=PATH (exits 1 at once, before serving, while PATH exists), impostor (a forked process
in a session of its own serves the port, this one never does), reload-refuses=MARKER (POST
/-/reload answers 500 while the --config.file holds MARKER). Before exiting by itself it
writes one line on stderr naming its exit code.
Always exits by itself after 300 s.
"""
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if "--version" in sys.argv:
    print("prometheus, version 2.42.0 (fake)")
    sys.exit(0)

opts = dict(kv.split("=", 1) if "=" in kv else (kv, "1") for kv in os.environ.get("FAKE_CHILD", "").split(",") if kv)
listen = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--web.listen-address=")), "127.0.0.1:0")
host, port = listen.rsplit(":", 1)


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        # reload-refuses=MARKER: /-/reload answers 500 while the config file holds MARKER, as
        # a Prometheus refuses a config promtool accepted.
        config = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config.file=")), "")
        if self.path == "/-/reload" and "reload-refuses" in opts and config:
            with open(config) as f:
                if opts["reload-refuses"] in f.read():
                    body = b"failed to reload config"
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
        self.do_GET()


if "ignore-term" in opts:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: (print("fake child: SIGTERM", flush=True), os._exit(0)))

if "orphan" in opts:
    if os.fork() == 0:
        if os.fork() == 0:
            time.sleep(1)
            os._exit(0)
        os._exit(0)
    os.wait()

print(f"fake child {os.getpid()} started", flush=True)
if "fail-if" in opts and os.path.exists(opts["fail-if"]):
    print(f"fake child: fatal: {opts['fail-if']} exists", file=sys.stderr, flush=True)
    os._exit(1)
if "impostor" in opts:
    parent = os.getpid()
    if os.fork() == 0:
        os.setsid()
        server = ThreadingHTTPServer((host, int(port)), H)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        # Out of the group and the session, it follows its parent out.
        deadline = time.time() + float(opts.get("exit-after", 300))
        while time.time() < deadline and os.getppid() == parent:
            time.sleep(0.05)
        os._exit(0)
elif "never-ready" not in opts:
    server = ThreadingHTTPServer((host, int(port)), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
deadline = time.time() + float(opts.get("exit-after", 300))
while time.time() < deadline:
    time.sleep(0.05)
print("fake child exiting", flush=True)
print(f"fake child: fatal: exiting with code {opts.get('exit-code', 1)}", file=sys.stderr, flush=True)
os._exit(int(opts.get("exit-code", 1)))
