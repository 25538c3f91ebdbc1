#!/usr/bin/env python3
"""An HTTPS file server behind an HTTP CONNECT proxy, both on 127.0.0.1, for archive
downloads through HTTPS_PROXY.

It makes a throwaway CA and a server certificate for IP 127.0.0.1 (written to --dir as
ca.pem: point SSL_CERT_FILE at it), serves the files of --dir over TLS, and runs a CONNECT
proxy that appends each tunnel's target to --log. Prints
{"https": "https://127.0.0.1:PORT", "proxy": "http://127.0.0.1:PORT", "ca": PATH} once
listening; serves until stdin closes or --lifetime seconds pass.
"""
import argparse
import datetime
import ipaddress
import json
import os
import select
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingTCPServer, StreamRequestHandler

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lifetime import wait_for_parent


def certificates(dir):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moninit test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {n: os.path.join(dir, f"{n}.pem") for n in ("ca", "cert", "key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--lifetime", type=float, default=300.0)
    args = p.parse_args()
    paths = certificates(args.dir)

    class Files(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            full = os.path.join(args.dir, os.path.basename(self.path.split("?")[0]))
            data = open(full, "rb").read() if os.path.isfile(full) else None
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

    https = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths["cert"], paths["key"])
    https.socket = ctx.wrap_socket(https.socket, server_side=True)

    class Connect(StreamRequestHandler):
        def handle(self):
            request = self.rfile.readline().decode()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            method, target, _ = request.split(" ", 2)
            with open(args.log, "a") as f:
                f.write(f"{method} {target}\n")
            if method != "CONNECT":
                self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)), timeout=10)
            self.wfile.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            self.wfile.flush()
            pair = [self.connection, upstream]
            while True:
                readable, _, _ = select.select(pair, [], [], 30)
                if not readable:
                    break
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        upstream.close()
                        return
                    (upstream if s is self.connection else self.connection).sendall(data)

    ThreadingTCPServer.daemon_threads = True
    proxy = ThreadingTCPServer(("127.0.0.1", 0), Connect)
    for server in (https, proxy):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"https": f"https://127.0.0.1:{https.server_address[1]}",
                      "proxy": f"http://127.0.0.1:{proxy.server_address[1]}", "ca": paths["ca"]}), flush=True)
    wait_for_parent(args.lifetime)


if __name__ == "__main__":
    main()
