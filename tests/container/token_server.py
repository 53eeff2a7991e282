#!/usr/bin/python3
"""A minimal Docker registry token server (the distribution "token" auth scheme), for tests.

    token_server.py CERT KEY USER PASSWORD LOG

Listens on 127.0.0.1 on a free port and prints that port as its first line of output.
GET /token?service=S&scope=repository:NAME:pull,push answers {"token": JWT, "access_token": JWT}:
an RS256 JWT signed with KEY, whose header carries CERT as x5c (distribution 2.8 checks that
chain against its `rootcertbundle`). USER:PASSWORD (HTTP basic) is granted every action it asks
for; an anonymous request gets a token granting nothing; wrong credentials get 401. Each
request is appended to LOG as one JSON line: {"path", "user", "scopes", "granted"}.

Runs under Debian's /usr/bin/python3 with python3-jwt and python3-cryptography.
"""

import base64
import http.server
import json
import sys
import time
import urllib.parse
import uuid

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

ISSUER = "berth-test-issuer"


def main():
    cert_path, key_path, user, password, log_path = sys.argv[1:6]
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def reply(self, status, body, headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            if url.path != "/token":
                self.reply(404, {"errors": [{"code": "NOT_FOUND"}]})
                return
            who = None
            header = self.headers.get("Authorization", "")
            if header.lower().startswith("basic "):
                try:
                    u, _, p = base64.b64decode(header[6:].strip()).decode().partition(":")
                except Exception:
                    u, p = None, None
                if u != user or p != password:
                    self.record(url.path, u, [], [], 401)
                    self.reply(
                        401,
                        {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                        [("WWW-Authenticate", 'Basic realm="berth-test-token"')],
                    )
                    return
                who = u
            scopes = query.get("scope", [])
            access = []
            if who is not None:
                for scope in scopes:
                    for item in scope.split(" "):
                        parts = item.split(":")
                        if len(parts) < 3:
                            continue
                        kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1]
                        access.append(
                            {"type": kind, "name": name, "actions": actions.split(",")}
                        )
            now = int(time.time())
            claims = {
                "iss": ISSUER,
                "sub": who or "",
                "aud": query.get("service", [""])[0],
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": uuid.uuid4().hex,
                "access": access,
            }
            token = jwt.encode(claims, key, algorithm="RS256", headers={"x5c": x5c})
            self.record(url.path, who, scopes, access, 200)
            self.reply(
                200,
                {
                    "token": token,
                    "access_token": token,
                    "expires_in": 300,
                    "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                },
            )

        def record(self, path, who, scopes, granted, status):
            with open(log_path, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "path": path,
                            "user": who,
                            "scopes": scopes,
                            "granted": granted,
                            "status": status,
                        }
                    )
                    + "\n"
                )

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
