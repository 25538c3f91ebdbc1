#!/usr/bin/env python3
"""A stand-in for Grafana: started as `grafana server --config=INI --homepath=DIR`, it
checks the rendered files the way Grafana would read them, strictly, then serves
/api/health and the provisioning reload endpoints on [server] http_addr:http_port.

Checks (any failure: message on stderr, exit 1):
  - grafana.ini: [auth] sigv4_auth_enabled = true; [paths] provisioning is a directory;
  - datasources/*.yaml: apiVersion 1, each datasource has exactly known keys, a name, a type
    and a url; a native-SigV4 datasource has jsonData.sigV4Auth, sigV4AuthType, sigV4Region;
  - dashboards/*.yaml: apiVersion 1, file providers whose options.path is a directory of
    dashboards, each valid JSON with a title.
  - a datasource whose type is not a core one (e.g. grafana-amazonprometheus-datasource) needs
    that plugin in [paths] plugins: a directory (or a link to one) holding plugin.json with
    that id, as Grafana would load it.
Once serving it prints one line: `grafana stand-in: loaded {json}` with its homepath (and
whether conf/defaults.ini is there), the plugin ids found and the datasource types.
`--version` prints `grafana version $GRAFANA_STAND_IN_VERSION` (default 12.1.0).
Exits 0 on SIGTERM (printing a line), or by itself after 300 s.
"""
import configparser
import glob
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

DS_KEYS = {"orgId", "orgName", "version", "name", "type", "access", "url", "user", "database", "basicAuth",
           "basicAuthUser", "withCredentials", "isDefault", "correlations", "jsonData", "secureJsonData",
           "editable", "uid"}
PROVIDER_KEYS = {"name", "type", "orgId", "folder", "folderUid", "editable", "options", "disableDeletion",
                 "updateIntervalSeconds", "allowUiUpdates"}


def fail(msg):
    print(f"grafana stand-in: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


CORE_TYPES = {"prometheus", "loki", "tempo", "cloudwatch", "elasticsearch", "graphite", "influxdb"}


def plugins_in(cp):
    found = {}
    root = cp.get("paths", "plugins", fallback="")
    for entry in sorted(glob.glob(os.path.join(root, "*"))):
        manifest = os.path.join(entry, "plugin.json")
        if os.path.isfile(manifest):
            found[json.load(open(manifest)).get("id")] = os.path.realpath(entry)
    return found


def check(ini_path):
    cp = configparser.RawConfigParser(strict=True)
    cp.read(ini_path)
    plugins = plugins_in(cp)
    types = []
    if cp.get("auth", "sigv4_auth_enabled", fallback="") != "true":
        fail("[auth] sigv4_auth_enabled is not true")
    prov = cp.get("paths", "provisioning", fallback="")
    if not os.path.isdir(prov):
        fail(f"[paths] provisioning {prov!r} is not a directory")
    for path in glob.glob(os.path.join(prov, "datasources", "*.yaml")):
        doc = yaml.safe_load(open(path))
        if doc.get("apiVersion") != 1:
            fail(f"{path}: apiVersion must be 1")
        for ds in doc.get("datasources", []):
            unknown = set(ds) - DS_KEYS
            if unknown:
                fail(f"{path}: unknown datasource keys {sorted(unknown)}")
            if not (ds.get("name") and ds.get("type") and ds.get("url")):
                fail(f"{path}: datasource needs name, type and url")
            types.append(ds["type"])
            if ds["type"] not in CORE_TYPES and ds["type"] not in plugins:
                fail(f"{path}: datasource type {ds['type']!r} needs that plugin in [paths] plugins")
            jd = ds.get("jsonData", {})
            if jd.get("sigV4Auth") and not (jd.get("sigV4AuthType") and jd.get("sigV4Region")):
                fail(f"{path}: sigV4Auth without sigV4AuthType/sigV4Region")
    dashboards = 0
    for path in glob.glob(os.path.join(prov, "dashboards", "*.yaml")):
        doc = yaml.safe_load(open(path))
        for p in doc.get("providers", []):
            unknown = set(p) - PROVIDER_KEYS
            if unknown:
                fail(f"{path}: unknown provider keys {sorted(unknown)}")
            root = p.get("options", {}).get("path", "")
            if not os.path.isdir(root):
                fail(f"{path}: options.path {root!r} is not a directory")
            for dash in glob.glob(os.path.join(root, "**", "*.json"), recursive=True):
                d = json.load(open(dash))
                if not d.get("title"):
                    fail(f"{dash}: dashboard without a title")
                if "refused-by-stand-in" in d["title"]:
                    # What a real Grafana may do with input moninit cannot judge (a plugin it
                    # cannot load, a database migration): fail at start.
                    fail(f"{dash}: refusing to start (title asks for it)")
                dashboards += 1
    return cp, dashboards, plugins, types


def main():
    if "--version" in sys.argv[1:]:
        print(f"grafana version {os.environ.get('GRAFANA_STAND_IN_VERSION', '12.1.0')}")
        sys.exit(0)
    args = sys.argv[1:]
    if args and args[0] == "server":
        args = args[1:]
    ini = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
    if not ini:
        fail("no --config=")
    cp, dashboards, plugins, types = check(ini)
    home = next((a.split("=", 1)[1] for a in args if a.startswith("--homepath=")), "")
    addr = cp.get("server", "http_addr", fallback="") or "127.0.0.1"
    port = int(cp.get("server", "http_port", fallback="3000"))

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/api/health":
                return self.reply(200, {"database": "ok", "version": "stand-in"})
            self.reply(404, {"message": "not found"})

        def do_POST(self):
            if self.path in ("/api/admin/provisioning/dashboards/reload", "/api/admin/provisioning/datasources/reload"):
                check(ini)
                return self.reply(200, {"message": "reloaded"})
            self.reply(404, {"message": "not found"})

    server = ThreadingHTTPServer((addr, port), H)
    signal.signal(signal.SIGTERM, lambda *a: (print("grafana stand-in: stopping", flush=True), os._exit(0)))
    loaded = {"homepath": home, "defaults_ini": os.path.isfile(os.path.join(home, "conf", "defaults.ini")),
              "plugins": plugins, "datasource_types": types}
    print(f"grafana stand-in: loaded {json.dumps(loaded, sort_keys=True)}", flush=True)
    print(f"grafana stand-in: serving on {addr}:{port} with {dashboards} dashboards", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(300)


if __name__ == "__main__":
    main()
