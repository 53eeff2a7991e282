#!/usr/bin/python3
"""A stand-in registry for answers a real one is hard to make give, for tests.

    stub_registry.py MODE LOG [DIR]

Listens on 127.0.0.1 on a free port, prints that port as its first line of output, and appends
each request to LOG as one JSON line: {"method", "path", "authorization"}. By MODE:

    deny    200 {} for `GET /v2/`, then 403 {"errors": [{"code": "DENIED", ...}]} for anything
            else, as registries answer an account that may not read a repository
    files   the file DIR/PATH for GET PATH (404 if there is none), as a CDN serves the blobs
            a registry redirects to
"""

import http.server
import json
import os
import sys


def main():
    mode, log_path = sys.argv[1:3]
    root = sys.argv[3] if len(sys.argv) > 3 else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def send_file(self, path):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                self.reply(404, {"errors": [{"code": "BLOB_UNKNOWN"}]})
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self):
            with open(log_path, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "method": self.command,
                            "path": self.path,
                            "authorization": self.headers.get("Authorization"),
                        }
                    )
                    + "\n"
                )
            if mode == "files":
                path = os.path.normpath(self.path.split("?")[0]).lstrip("/")
                self.send_file(os.path.join(root, path))
            elif self.path == "/v2/":
                self.reply(200, {})
            elif mode == "deny":
                self.reply(
                    403,
                    {
                        "errors": [
                            {
                                "code": "DENIED",
                                "message": "requested access to the resource is denied",
                            }
                        ]
                    },
                )
            else:
                self.reply(500, {"errors": [{"code": "UNKNOWN", "message": "bad mode"}]})

        do_HEAD = do_GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
