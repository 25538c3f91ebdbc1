#!/usr/bin/env python3
"""A local stand-in for AMP's data plane that verifies SigV4 with botocore.

Every request must carry a SigV4 signature that botocore's own implementation (an
independent verifier) recomputes identically from the request as received: method, path,
the raw query string, the signed headers and the body. Good requests are answered:
  - forwarded to --upstream (a Prometheus with --web.enable-remote-write-receiver), with
    /workspaces/WS/api/v1/remote_write mapped to /api/v1/write and other /workspaces/WS/...
    paths to /...; or
  - without --upstream: 204 for remote_write, and a JSON echo of the decoded query
    parameters for everything else.
Bad requests get AMP-like 403s: a signature mismatch, an unknown key, an expired token, a
signature more than 5 minutes off the stand-in's clock (shifted by --clock-offset, which
also shifts the Date header of every answer).

Keys: --key AKID:SECRET (repeatable) are always valid. With --issue-ttl SECONDS, GET /creds
serves ECS-style container credentials that expire after that many seconds; the stand-in
accepts each issued key until it expires, then answers ExpiredTokenException.

GET /_stand_in/log returns what was received, as JSON. Prints one JSON line
{"endpoint": "http://127.0.0.1:PORT"} when ready; exits when stdin closes or after --lifetime.
"""
import argparse
import datetime
import email.utils
import hashlib
import json
import secrets
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from lifetime import wait_for_parent

LOCK = threading.Lock()
KEYS = {}  # access key -> (secret, token or None, expiry datetime or None)
LOG = []
ARGS = None


def now():
    """The stand-in's clock: real time shifted by --clock-offset (a host whose clock is off
    sees AWS's this way)."""
    offset = ARGS.clock_offset if ARGS else 0.0
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset)


def parse_authorization(value):
    algo, _, rest = value.partition(" ")
    if algo != "AWS4-HMAC-SHA256":
        raise ValueError("not AWS4-HMAC-SHA256")
    fields = {}
    for part in rest.split(","):
        k, _, v = part.strip().partition("=")
        fields[k] = v
    ak, date, region, service, term = fields["Credential"].split("/")
    return ak, date, region, service, fields["SignedHeaders"].split(";"), fields["Signature"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def date_time_string(self, timestamp=None):
        # The Date header AWS's answers carry, from the stand-in's (possibly shifted) clock.
        return email.utils.format_datetime(now(), usegmt=True)

    def reply(self, status, body=b"", ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def deny(self, kind, message, entry):
        entry["verified"] = False
        entry["error"] = kind
        with LOCK:
            LOG.append(entry)
        self.reply(403, json.dumps({"__type": kind, "message": message}).encode())

    def verify(self, body):
        """Returns (ok, kind, message, access_key)."""
        auth = self.headers.get("Authorization")
        if not auth:
            return False, "MissingAuthenticationTokenException", "Missing Authentication Token", None
        try:
            ak, date, region, service, signed, signature = parse_authorization(auth)
        except Exception as e:  # noqa: BLE001
            return False, "IncompleteSignatureException", f"bad Authorization header: {e}", None
        with LOCK:
            known = KEYS.get(ak)
        if known is None:
            return False, "UnrecognizedClientException", "The security token included in the request is invalid.", ak
        secret, token, expiry = known
        if expiry is not None and now() >= expiry:
            return False, "ExpiredTokenException", "The security token included in the request is expired", ak
        if token is not None and self.headers.get("X-Amz-Security-Token") != token:
            return False, "UnrecognizedClientException", "The security token included in the request is invalid.", ak
        if (service, region) != (ARGS.service, ARGS.region):
            return False, "InvalidSignatureException", f"Credential should be scoped to {ARGS.region}/{ARGS.service}", ak
        amz_date = self.headers.get("X-Amz-Date", "")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            return False, "IncompleteSignatureException", "missing or bad X-Amz-Date", ak
        if abs((now() - when).total_seconds()) > 300:
            return False, "InvalidSignatureException", (
                f"Signature expired: {amz_date} is now earlier than "
                f"{(now() - datetime.timedelta(minutes=5)).strftime('%Y%m%dT%H%M%SZ')} "
                f"({now().strftime('%Y%m%dT%H%M%SZ')} - 5 min.)"), ak
        payload = self.headers.get("X-Amz-Content-SHA256")
        if payload not in (None, "UNSIGNED-PAYLOAD") and payload != hashlib.sha256(body).hexdigest():
            return False, "InvalidSignatureException", "x-amz-content-sha256 does not match the body", ak
        for required in ("host", "x-amz-date"):
            if required not in signed:
                return False, "InvalidSignatureException", f"{required} is not signed", ak
        headers = {}
        for name in signed:
            value = self.headers.get_all(name)
            if value is None:
                return False, "InvalidSignatureException", f"signed header {name} missing", ak
            headers[name] = ",".join(v.strip() for v in value)
        url = f"https://{self.headers['Host']}{self.path}"
        request = AWSRequest(method=self.command, url=url, data=body, headers=headers)
        request.context["timestamp"] = amz_date
        if payload == "UNSIGNED-PAYLOAD":
            request.context["payload_signing_enabled"] = False
        signer = SigV4Auth(Credentials(ak, secret, token), service, region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != signature:
            return False, "InvalidSignatureException", (
                "The request signature we calculated does not match the signature you provided."), ak
        return True, None, None, ak

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urllib.parse.urlsplit(self.path)
        if split.path == "/_stand_in/log":
            with LOCK:
                return self.reply(200, json.dumps(LOG).encode())
        if split.path == "/creds" and ARGS.issue_ttl:
            ak = "ASIA" + secrets.token_hex(8).upper()
            secret, token = secrets.token_hex(20), secrets.token_hex(32)
            expiry = now() + datetime.timedelta(seconds=ARGS.issue_ttl)
            with LOCK:
                KEYS[ak] = (secret, token, expiry)
                LOG.append({"issued": ak})
            return self.reply(200, json.dumps({
                "AccessKeyId": ak, "SecretAccessKey": secret, "Token": token,
                "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}).encode())
        entry = {"method": self.command, "path": split.path, "raw_query": split.query,
                 "params": urllib.parse.parse_qsl(split.query, keep_blank_values=True),
                 "host": self.headers.get("Host"), "body_len": len(body),
                 "signed_headers": None, "security_token": self.headers.get("X-Amz-Security-Token") is not None}
        if self.headers.get("Content-Type") == "application/x-www-form-urlencoded":
            entry["form"] = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        ok, kind, message, ak = self.verify(body)
        entry["access_key"] = ak
        if not ok:
            return self.deny(kind, message, entry)
        entry["verified"] = True
        with LOCK:
            LOG.append(entry)
        parts = split.path.split("/")
        # /workspaces/WS/rest...
        rest = "/" + "/".join(parts[3:]) if len(parts) > 3 and parts[1] == "workspaces" else split.path
        if rest == "/api/v1/remote_write":
            rest = "/api/v1/write"
        if ARGS.status:
            return self.reply(ARGS.status, b'{"message":"stand-in status"}', extra={"Retry-After": "7"})
        if not ARGS.upstream:
            if rest == "/api/v1/write":
                return self.reply(204)
            echo = {"status": "success", "params": entry["params"], "form": entry.get("form")}
            return self.reply(200, json.dumps(echo).encode())
        target = ARGS.upstream + rest + (("?" + split.query) if split.query else "")
        fwd_headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("content-type", "content-encoding", "x-prometheus-remote-write-version")}
        req = urllib.request.Request(target, data=body if self.command == "POST" else None,
                                     method=self.command, headers=fwd_headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                data = resp.read()
                self.reply(resp.status, data, resp.headers.get("Content-Type", "application/json"))
        except urllib.error.HTTPError as e:
            self.reply(e.code, e.read(), e.headers.get("Content-Type", "text/plain"))

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--key", action="append", default=[], help="AKID:SECRET[:TOKEN]")
    p.add_argument("--issue-ttl", type=float, default=0)
    p.add_argument("--upstream")
    p.add_argument("--service", default="aps")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--status", type=int, default=0, help="answer verified requests with this status")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--clock-offset", type=float, default=0.0,
                   help="seconds the stand-in's clock (and Date) is ahead of this host's")
    p.add_argument("--lifetime", type=float, default=600)
    ARGS = p.parse_args()
    for spec in ARGS.key:
        ak, secret, *token = spec.split(":", 2)
        KEYS[ak] = (secret, token[0] if token else None, None)
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"endpoint": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    wait_for_parent(ARGS.lifetime)
    server.shutdown()


if __name__ == "__main__":
    main()
