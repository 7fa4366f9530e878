"""A registry that wants bearer tokens, as GHCR does: docker-registry with token auth, and a small token server."""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import lab

SERVICE, ISSUER = "lab-registry", "lab-token-issuer"


class TokenServer:
    """Issues registry tokens (RS256 JWTs with the certificate in x5c) for one user, and records every request."""

    def __init__(self, *, username: str, password: str) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .sign(self.key, hashes.SHA256())
        )
        self.basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.username = username
        self.requests: list[dict[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", lab.free_port()), self._handler())

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/token"

    def token(self, scopes: list[str], *, user: str) -> str:
        access = []
        for scope in scopes if user else []:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        x5c = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": [x5c]})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                given = self.headers.get("Authorization", "")
                server.requests.append({"path": self.path, "authorization": given.split(" ")[0]})
                if given and given != server.basic:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps(
                    {"token": server.token(query.get("scope", []), user=server.username if given else "")}
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class TokenRegistry:
    """`docker-registry serve` on loopback with token auth, its storage and config in `root`."""

    def __init__(self, root: Path, tokens: TokenServer) -> None:
        self.root = root
        self.tokens = tokens
        self.host = f"127.0.0.1:{lab.free_port()}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        bundle = self.root / "token-cert.pem"
        bundle.write_bytes(self.tokens.cert.public_bytes(serialization.Encoding.PEM))
        config = {
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "storage")}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
            "auth": {
                "token": {
                    "realm": self.tokens.realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(bundle),
                }
            },
        }
        (self.root / "config.yml").write_text(json.dumps(config))
        with open(self.root / "registry.log", "ab") as log:
            self._process = subprocess.Popen(
                ["docker-registry", "serve", str(self.root / "config.yml")], stdout=log, stderr=log
            )
        deadline = time.monotonic() + lab.READY_TIMEOUT
        while self._status("/v2/") != 401:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise lab.LabError(f"token registry did not start:\n{(self.root / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait(timeout=lab.STOP_GRACE)

    def _status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.host}{path}", timeout=1) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            e.close()
            return e.code
        except OSError:
            return 0
