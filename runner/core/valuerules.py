"""The value rules of ENV_SCHEMA.md's `Rule` column: parsed once, checked before anything is sent.

A value the runtime rejects is otherwise found only when the new container fails to start, after the old one
was stopped. Each rule is one of a small fixed grammar; anything else is a lint problem, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

FORMS = (
    "any",
    "environment",
    "one of: a, b, c",
    "at least N characters",
    "integer MIN..MAX",
    "https URL",
    "pattern: `REGEX`",
)
_ONE_OF = re.compile(r"one of:\s*(.*)", re.DOTALL)
_AT_LEAST = re.compile(r"at least ([0-9]+) characters")
_INTEGER = re.compile(r"integer (-?[0-9]+)\.\.(-?[0-9]+)")
_PATTERN = re.compile(r"pattern:\s*`(.+)`", re.DOTALL)
_WORD = re.compile(r"[^\s,]+")
_DECIMAL = re.compile(r"-?[0-9]+")
_URL_SPACE = re.compile(r"[\s\x00-\x1f\x7f]")


class RuleError(ValueError):
    """A `Rule` cell that is not one of the forms; the message says which forms there are."""


@dataclass(frozen=True)
class Rule:
    """One parsed rule: its kind and what it needs, and the text it was written as."""

    text: str
    kind: str
    words: tuple[str, ...] = ()
    low: int = 0
    high: int = 0
    regex: re.Pattern[str] | None = None

    def check(self, value: str, *, environment: str) -> str | None:
        """Why `value` breaks this rule (a reason that never quotes the value), or None when it keeps it."""
        if self.kind == "any":
            return None
        if self.kind == "environment":
            return None if value == environment else f"must be {environment!r}, the environment being deployed"
        if self.kind == "one of":
            return None if value in self.words else f"must be one of: {', '.join(self.words)}"
        if self.kind == "at least":
            return None if len(value) >= self.low else f"must be at least {self.low} characters long"
        if self.kind == "integer":
            if not _DECIMAL.fullmatch(value) or not self.low <= int(value) <= self.high:
                return f"must be a decimal integer from {self.low} to {self.high}"
            return None
        if self.kind == "https URL":
            return None if _is_https_url(value) else "must be an absolute https:// URL with a host"
        assert self.regex is not None
        return None if self.regex.fullmatch(value) else f"must match the pattern `{self.regex.pattern}` in full"


def parse_rule(text: str) -> Rule:
    """Parse one `Rule` cell; raises RuleError naming the accepted forms."""
    if text in ("any", "environment", "https URL"):
        return Rule(text=text, kind=text)
    if match := _ONE_OF.fullmatch(text):
        words = tuple(w.strip() for w in match[1].split(","))
        bad = [w for w in words if not _WORD.fullmatch(w)]
        if bad:
            raise RuleError(f"'one of:' needs words separated by commas, found {match[1]!r}")
        if len(set(words)) != len(words):
            raise RuleError(f"'one of:' lists a word twice: {match[1]!r}")
        return Rule(text=text, kind="one of", words=words)
    if match := _AT_LEAST.fullmatch(text):
        if int(match[1]) < 1:
            raise RuleError("'at least N characters' needs N of 1 or more (for anything at all, write 'any')")
        return Rule(text=text, kind="at least", low=int(match[1]))
    if match := _INTEGER.fullmatch(text):
        low, high = int(match[1]), int(match[2])
        if low > high:
            raise RuleError(f"'integer MIN..MAX' needs MIN <= MAX, found {low}..{high}")
        return Rule(text=text, kind="integer", low=low, high=high)
    if match := _PATTERN.fullmatch(text):
        try:
            regex = re.compile(match[1])
        except re.error as e:
            raise RuleError(f"the pattern `{match[1]}` is not a valid regular expression: {e}") from e
        return Rule(text=text, kind="pattern", regex=regex)
    raise RuleError(f"unknown rule {text!r}; a rule is exactly one of: {'; '.join(FORMS)} (write a | as \\|)")


def _is_https_url(value: str) -> bool:
    if _URL_SPACE.search(value):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme == "https" and bool(host)
