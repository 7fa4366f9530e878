"""Cloudflare's edge in front of an Access application, played on loopback for the CLI.

A request carrying a service token Access knows (`CF-Access-Client-Id` + `CF-Access-Client-Secret`) is
forwarded to the agent with a `Cf-Access-Jwt-Assertion` signed for that token (its `common_name` is the client
id, as Access does); any other request is answered with a redirect to the team's login page, as Access answers.
"""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import lab
from accesskeys import HEADER, TEAM, Issuer, Key

PASSED = ("Content-Type", "Accept", "Content-Length", "X-GitHub-OIDC-Token")
RETURNED = ("Content-Type", "Date", "Retry-After")


class AccessEdge:
    """Forwards to `upstream` what a known service token sends; redirects everything else to the login page."""

    def __init__(self, upstream: str, *, key: Key, issuer: Issuer, tokens: dict[str, str]) -> None:
        self.upstream = urlsplit(upstream)
        self.key, self.issuer, self.tokens = key, issuer, tokens
        edge = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                edge.handle(self)

            def do_POST(self) -> None:
                edge.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = lab.LoopbackHttp(Handler)

    @property
    def url(self) -> str:
        return self._http.url

    def close(self) -> None:
        self._http.close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        client_id = request.headers.get("CF-Access-Client-Id", "")
        if not client_id or self.tokens.get(client_id) != request.headers.get("CF-Access-Client-Secret"):
            request.send_response(302)
            request.send_header("Location", f"https://{TEAM}/cdn-cgi/access/login/deploy.example.com?redirect_url=/")
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        headers = {name: value for name in PASSED if (value := request.headers.get(name)) is not None}
        headers[HEADER] = self.issuer.sign(self.key, self.issuer.claims(common_name=client_id))
        connection = http.client.HTTPConnection(str(self.upstream.hostname), self.upstream.port, timeout=60)
        try:
            connection.request(request.command, request.path, body=body, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
        finally:
            connection.close()
        request.send_response_only(answer.status)
        for name in RETURNED:
            value = answer.getheader(name)
            if value is not None:
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
