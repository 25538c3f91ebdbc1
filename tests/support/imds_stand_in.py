#!/usr/bin/env python3
"""A local stand-in for the EC2 instance metadata service (IMDSv2) on 127.0.0.1.

Answers PUT /latest/api/token with a token, and, for requests carrying it, the instance id
(--instance-id), availability zone and region, and the autoscaling group tag when
--group is given (404 otherwise, as with instance metadata tags disabled). Every request is
logged on stderr. Prints {"endpoint": "http://127.0.0.1:PORT"} once listening, then serves
until its standard input closes or --lifetime seconds pass.
"""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lifetime import wait_for_parent

TOKEN = "moninit-imds-stand-in-token"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--instance-id", required=True)
    p.add_argument("--zone", default="us-east-1a")
    p.add_argument("--group")
    p.add_argument("--lifetime", type=float, default=300.0)
    args = p.parse_args()
    values = {
        "/latest/meta-data/instance-id": args.instance_id,
        "/latest/meta-data/placement/availability-zone": args.zone,
        "/latest/meta-data/placement/region": args.zone[:-1],
    }
    if args.group:
        values["/latest/meta-data/tags/instance/aws:autoscaling:groupName"] = args.group

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):
            sys.stderr.write("imds stand-in: " + (fmt % a) + "\n")

        def answer(self, code, body=b"", headers=()):
            self.send_response(code)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            if self.path == "/latest/api/token":
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "21600")
                self.answer(200, TOKEN.encode(), [("X-aws-ec2-metadata-token-ttl-seconds", ttl)])
            else:
                self.answer(404)

        def do_GET(self):
            if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                self.answer(401)
            elif self.path in values:
                self.answer(200, values[self.path].encode())
            else:
                self.answer(404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"endpoint": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    wait_for_parent(args.lifetime)
    server.shutdown()


if __name__ == "__main__":
    main()
