"""Cloudflare Access, played by the tests: RSA keys made here, the team's JWKS served on loopback, signed tokens."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import lab

TEAM = "test.cloudflareaccess.com"
ISSUER = f"https://{TEAM}"
CERTS = "/cdn-cgi/access/certs"
DISCOVERY = "/.well-known/openid-configuration"
HEADER = "Cf-Access-Jwt-Assertion"
SERVICE_TOKEN = f"{secrets.token_hex(16)}.access"
PROD_TOKEN = f"{secrets.token_hex(16)}.access"


# -- the identity provider's side: keys, a JWKS endpoint, tokens


@dataclass(frozen=True)
class Key:
    """One RSA 2048 signing key with its key id, as Access keeps them."""

    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def new(cls) -> Key:
        return cls(kid=secrets.token_hex(32), private=rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up early (the size-limit case) is no error here


class Jwks:
    """The team's certs endpoint: serves the keys it is given (or an error status), counts its hits.

    It is an OpenID issuer too (GitHub Actions' is one): `issuer` is its URL, and its discovery document names
    the same keys as `jwks_uri`.
    """

    def __init__(self, *, port: int | None = None) -> None:
        self.body = b'{"keys": []}'
        self.status = 200
        self.hits = 0
        self.discovery: bytes | None = None  # None: the document naming this issuer and its keys
        self._lock = threading.Lock()
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with jwks._lock:
                    jwks.hits += 1
                    status, body = jwks.status, jwks.body
                    if self.path == DISCOVERY:
                        body = jwks.discovery or json.dumps({"issuer": jwks.issuer, "jwks_uri": jwks.url}).encode()
                if self.path not in (CERTS, DISCOVERY):
                    status, body = 404, b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", lab.free_port() if port is None else port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.issuer}{CERTS}"

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def serve(self, *keys: Key) -> None:
        self.set_body(json.dumps({"keys": [k.jwk() for k in keys]}).encode())

    def set_body(self, body: bytes, status: int = 200) -> None:
        with self._lock:
            self.body, self.status = body, status

    def fail(self, status: int = 503) -> None:
        self.set_body(b'{"error": "unavailable"}', status)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issuer:
    """Makes tokens for one Access application and remembers every one, for the log check."""

    aud: str
    issued: list[str] = field(default_factory=list)

    def claims(self, **changes: Any) -> dict[str, Any]:
        """A service token's claims (common_name, no email, no nbf); a change to None drops the claim."""
        now = int(time.time())
        base = {"aud": [self.aud], "common_name": SERVICE_TOKEN, "exp": now + 300, "iat": now, "iss": ISSUER, "sub": ""}
        return {k: v for k, v in {**base, **changes}.items() if v is not None}

    def user_claims(self, email: str, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        user = {"email": email, "nbf": now, "type": "app", "sub": str(uuid.uuid4()), "identity_nonce": "n0nce"}
        return self.claims(common_name=None, **{**user, **changes})

    def sign(
        self, key: Key, claims: dict[str, Any] | None = None, *, kid: str | None = None, alg: str = "RS256"
    ) -> str:
        token = jwt.encode(claims or self.claims(), key.private, algorithm=alg, headers={"kid": kid or key.kid})
        return self.remember(token)

    def raw(self, header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes] | None = None) -> str:
        """A token assembled by hand, for what PyJWT refuses to make."""
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = sign(signing_input.encode()) if sign else b""
        return self.remember(f"{signing_input}.{_b64(signature)}")

    def remember(self, token: str) -> str:
        self.issued.append(token)
        return token


class Clock:
    """A monotonic clock the test moves (an hour cannot pass in a test)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
