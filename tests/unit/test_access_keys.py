"""The Access key cache alone, against a JWKS served on loopback, with a clock the test moves."""

from __future__ import annotations

import pytest

from accesskeys import Clock, Jwks, Key
from agent.jwks import JwksCache, KeysUnavailable


def test_the_cache_refreshes_old_keys_and_keeps_them_when_the_refresh_fails() -> None:
    old, new = Key.new(), Key.new()
    jwks, clock = Jwks(), Clock()
    try:
        jwks.serve(old)
        cache = JwksCache(jwks.url, clock=clock)
        cache.load()
        assert cache.key(old.kid) is not None
        jwks.fail(502)
        clock.now += 3600
        assert cache.key(old.kid) is not None  # refresh failed: the keys in hand stay
        assert cache.key(old.kid) is not None  # and no second try within the minute
        assert jwks.hits == 2
        jwks.serve(new)
        clock.now += 60
        assert cache.key(old.kid) is None  # refreshed: the old key is gone
        assert cache.key(new.kid) is not None
        assert jwks.hits == 3
    finally:
        jwks.close()


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{}", 503, "HTTP 503"),
        (b"<html>", 200, "not JSON"),
        (b'{"keys": {}}', 200, '"keys" list'),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}', 200, "no RS256 signing key"),
        (b'{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB", "alg": "RS512"}]}', 200, "no RS256"),
        (b'{"keys": []}' + b" " * (1024 * 1024), 200, "more than"),
    ],
    ids=["http-503", "not-json", "keys-not-a-list", "hmac-key", "rs512-key", "over-1-MiB"],
)
def test_the_cache_loads_nothing_from_a_bad_jwks(body: bytes, status: int, reason: str) -> None:
    jwks, clock = Jwks(), Clock()
    try:
        jwks.set_body(body, status)
        cache = JwksCache(jwks.url, clock=clock)
        cache.load()
        with pytest.raises(KeysUnavailable, match=reason):
            cache.key("any")
        assert jwks.hits == 1  # within the retry interval: no new attempt
        clock.now += 3
        with pytest.raises(KeysUnavailable):
            cache.key("any")
        assert jwks.hits == 2
    finally:
        jwks.close()


def test_keys_in_hand_are_not_trusted_for_ever_while_the_certs_url_fails() -> None:
    """Found in review: keys were trusted for ever while the certs URL was down; a revoked key stayed valid."""
    key = Key.new()
    jwks, clock = Jwks(), Clock()
    try:
        jwks.serve(key)
        cache = JwksCache(jwks.url, clock=clock, max_stale=24 * 3600)
        cache.load()
        jwks.fail(502)
        clock.now += 23 * 3600
        assert cache.key(key.kid) is not None  # a refresh failed: the keys in hand still serve
        clock.now += 3600
        with pytest.raises(KeysUnavailable, match=r"fetched 24\.0 h ago .* keys older than 24 h are not trusted"):
            cache.key(key.kid)
        with pytest.raises(KeysUnavailable):
            cache.key(key.kid)  # no new attempt within the retry interval, and still refused
        jwks.serve(key)
        clock.now += 3
        assert cache.key(key.kid) is not None  # the certs URL answers again: trusted again
    finally:
        jwks.close()
