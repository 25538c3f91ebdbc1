#!/usr/bin/env python3
"""Serves the files of --dir over HTTP on 127.0.0.1, for archive downloads.

GET /NAME answers the file with its Content-Length; GET /NAME?truncate announces the full
length, sends half the bytes and closes the connection (an interrupted download). Every
request is counted; GET /_stand_in/count answers the count. Prints
{"endpoint": "http://127.0.0.1:PORT"} once listening; serves until stdin closes or
--lifetime seconds pass.
"""
import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lifetime import wait_for_parent

count = 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--lifetime", type=float, default=300.0)
    args = p.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            global count
            path, _, query = self.path.partition("?")
            if path == "/_stand_in/count":
                body = str(count).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            count += 1
            full = os.path.join(args.dir, os.path.basename(path))
            if not os.path.isfile(full):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = open(full, "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if query == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"endpoint": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    wait_for_parent(args.lifetime)
    server.shutdown()


if __name__ == "__main__":
    main()
