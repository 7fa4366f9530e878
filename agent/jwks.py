"""Signing keys of a token issuer: fetched from its JWKS, cached by `kid`, refreshed, and not trusted past a
staleness bound while the JWKS cannot be fetched.

One cache, two issuers: Cloudflare Access (its certs URL is the JWKS) and GitHub Actions' OIDC issuer (the JWKS
named by `jwks_uri` in its `/.well-known/openid-configuration`, looked up again at every fetch)."""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from agent.logs import log

ALGORITHM = "RS256"
MAX_KID_CHARS = 256
# Keys in hand are trusted this long after their last successful fetch, while the certs URL fails.
MAX_STALE = 24 * 3600.0
DISCOVERY_PATH = "/.well-known/openid-configuration"
_KEYS_URL = re.compile(r"https://[^\s/]+/\S*|http://127\.0\.0\.1(?::[0-9]{1,5})?/\S*")


class KeysUnavailable(Exception):
    """No signing key has been loaded yet: the JWKS could not be fetched or held no usable key."""


@dataclass(frozen=True)
class _KeySet:
    keys: Mapping[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float | None = None


class JwksCache:
    """The team's RS256 signing keys by `kid`, fetched from the certs URL and shared by a worker's request threads.

    Refetched when a token names an unknown `kid` or the keys are older than `max_age`, at most once per
    `refetch_interval` (a flood of made-up key ids never becomes a flood of fetches); while no key is usable,
    a request tries again at most once per `retry_interval`. A failed refetch keeps the keys in hand, for at
    most `max_stale`: past that, nothing is trusted until the certs URL answers again (a key that Access
    revoked meanwhile must not stay valid here for ever). A key removed from the JWKS is dropped at the next
    successful refetch.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "access keys",
        issuer: str | None = None,
        refetch_interval: float = 60.0,
        retry_interval: float = 3.0,
        max_age: float = 3600.0,
        max_stale: float = MAX_STALE,
        timeout: float = 5.0,
        max_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        # What the log calls these keys; with `issuer`, `url` is its discovery document, which names the JWKS.
        self.name = name
        self.issuer = issuer
        self.refetch_interval = refetch_interval
        self.retry_interval = retry_interval
        self.max_age = max_age
        self.max_stale = max_stale
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._clock = clock
        # Readers take the current snapshot without the lock; only fetching (and replacing it) is serialized.
        self._current = _KeySet()
        self._fetch_lock = threading.Lock()
        self._last_attempt: float | None = None
        self._last_refetch: float | None = None
        self._last_error = "not fetched yet"

    @classmethod
    def discovered(cls, issuer: str, *, name: str, **options: Any) -> JwksCache:
        """The keys of an OpenID issuer, found through its discovery document (`jwks_uri`)."""
        return cls(issuer.rstrip("/") + DISCOVERY_PATH, name=name, issuer=issuer.rstrip("/"), **options)

    def key_ids(self) -> list[str]:
        """The key ids of the RS256 signing keys served now, fetched once and kept nowhere (`deploy-agent check`);
        raises OSError (unreachable, an HTTP error) or ValueError (no usable key, another issuer's document)."""
        return sorted(_parse_jwks(self._download()))

    def load(self) -> None:
        """The first fetch, at startup; a failure is logged and retried on later requests."""
        with self._fetch_lock:
            self._fetch(self._clock())

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key with this `kid` (None when the JWKS has no such key); raises KeysUnavailable while no key is
        usable (none loaded yet, or the ones in hand are older than `max_stale`)."""
        current = self._current
        if kid in current.keys and not self._stale(current, self._clock()):
            return current.keys[kid]
        with self._fetch_lock:
            now = self._clock()
            current = self._current
            if not self._usable(current, now):
                if self._last_attempt is None or now - self._last_attempt >= self.retry_interval:
                    current = self._fetch(now)
                if not self._usable(current, now):
                    raise KeysUnavailable(self._why_unusable(current, now))
            elif (kid not in current.keys or self._stale(current, now)) and self._may_refetch(now):
                self._last_refetch = now
                current = self._fetch(now)
            return current.keys.get(kid)

    def _stale(self, current: _KeySet, now: float) -> bool:
        return current.fetched_at is not None and now - current.fetched_at >= self.max_age

    def _usable(self, current: _KeySet, now: float) -> bool:
        return current.fetched_at is not None and now - current.fetched_at < self.max_stale

    def _why_unusable(self, current: _KeySet, now: float) -> str:
        if current.fetched_at is None:
            return self._last_error
        hours = (now - current.fetched_at) / 3600
        return (
            f"the keys in hand were fetched {hours:.1f} h ago and could not be refreshed since ({self._last_error}); "
            f"keys older than {self.max_stale / 3600:g} h are not trusted"
        )

    def _may_refetch(self, now: float) -> bool:
        return self._last_refetch is None or now - self._last_refetch >= self.refetch_interval

    def _fetch(self, now: float) -> _KeySet:
        """Fetch and replace the keys; on failure log why and keep the keys in hand. Called with the lock held."""
        self._last_attempt = now
        try:
            keys = _parse_jwks(self._download())
        except (OSError, ValueError) as e:
            self._last_error = str(e)
            kept = sorted(self._current.keys)
            log(f"{self.name} not fetched", level=logging.WARNING, url=self.url, reason=self._last_error, keeping=kept)
            if not kept:
                log(f"requests that need the {self.name} answer 503 until they load", level=logging.ERROR, url=self.url)
            return self._current
        self._current = _KeySet(keys=keys, fetched_at=now)
        log(f"{self.name} loaded", url=self.url, kids=sorted(keys))
        return self._current

    def _download(self) -> bytes:
        """The JWKS document: from `url`, or (with an issuer) from the `jwks_uri` its discovery document names."""
        if self.issuer is None:
            return self._get(self.url)
        try:
            document = json.loads(self._get(self.url))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{self.url} is not JSON") from None
        issuer = document.get("issuer") if isinstance(document, dict) else None
        if not isinstance(issuer, str) or issuer.rstrip("/") != self.issuer:
            raise ValueError(f"{self.url} does not describe the issuer {self.issuer}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not _KEYS_URL.fullmatch(jwks_uri):
            raise ValueError(f"{self.url} names no https:// jwks_uri")
        return self._get(jwks_uri)

    def _get(self, url: str) -> bytes:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"the keys URL {url} is not an http(s) URL")
        request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "deploy-agent"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body: bytes = response.read(self.max_bytes + 1)
        except urllib.error.HTTPError as e:
            e.close()  # it holds the response
            raise OSError(f"{url} answered HTTP {e.code}") from None
        except urllib.error.URLError as e:
            raise OSError(f"{url} is unreachable: {e.reason}") from None
        except TimeoutError:
            raise OSError(f"{url} did not answer within {self.timeout:g}s") from None
        except http.client.HTTPException as e:
            raise OSError(f"{url} sent a broken HTTP answer ({type(e).__name__})") from None
        if len(body) > self.max_bytes:
            raise ValueError(f"{url} answered more than {self.max_bytes} bytes")
        return body


def _parse_jwks(body: bytes) -> dict[str, jwt.PyJWK]:
    """The RS256 signing keys of a JWKS document by kid; raises ValueError when it holds none."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the JWKS is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError('the JWKS is not a JSON object with a "keys" list')
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        if entry.get("use", "sig") != "sig" or not isinstance(entry.get("kid"), str):
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except jwt.PyJWTError as e:
            log("signing key skipped", level=logging.WARNING, kid=entry["kid"][:MAX_KID_CHARS], reason=str(e)[:200])
    if not keys:
        raise ValueError("the JWKS holds no RS256 signing key")
    return keys
