"""Secret values are wrapped once, where they enter, unwrapped only where they leave, and masked in foreign text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus

MASK = "****"
# Masking a one- or two-character value would mangle every line, and hides nothing.
MIN_MASKED = 3


class Secret:
    """A value whose str() and repr() are masked; `reveal()` is the one way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def reveal(value: str | Secret) -> str:
    """The plain value of a variable, secret or not."""
    return value.reveal() if isinstance(value, Secret) else value


class Masker:
    """Replaces secret values with `****` in text that comes from elsewhere (a container's output, a healthcheck's).

    Every occurrence of every value is found in the text as it came, and each run of characters covered by one
    or more of them becomes one `****`: a secret that contains a shorter one, or two secrets that overlap, are
    masked whole. Each line of a multi-line value (a PEM key) is masked too, and the forms a runtime most often
    prints a value in (URL-encoded, JSON-escaped). Values shorter than `min_length` are left alone. A text cut
    from a longer one (`head_cut`, `cut`) may hold a secret only in part at the cut: a start that ends a value,
    or an end that begins one (`min_length` characters or more), is masked too. docs/masking.md says what is
    promised and what is not.
    """

    def __init__(self, values: Iterable[str | Secret], *, min_length: int = MIN_MASKED) -> None:
        pieces: set[str] = set()
        for value in map(reveal, values):
            for form in (value, *encoded_forms(value)):
                pieces.add(form)
                pieces.update(line.strip() for line in form.splitlines())
        self.min_length = min_length
        self._values = sorted((p for p in pieces if len(p) >= min_length), key=lambda p: (-len(p), p))
        # The longest value in UTF-8 bytes: how far past a cut a secret can reach.
        self.longest = max((len(v.encode("utf-8", "surrogatepass")) for v in self._values), default=0)

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, text: str, *, cut: bool = False, head_cut: bool = False) -> str:
        """The text with every secret value masked. `cut`: the text was cut short of its end; `head_cut`: it
        starts after the start of what was written (a tail that begins inside a line)."""
        spans = [span for value in self._values for span in _occurrences(text, value)]
        if cut:
            spans += [(len(text) - n, len(text)) for n in self._fragments(text, at_end=True)]
        if head_cut:
            spans += [(0, n) for n in self._fragments(text, at_end=False)]
        if not spans:
            return text
        out, at = [], 0
        for start, end in _merged(spans):
            out += [text[at:start], MASK]
            at = end
        out.append(text[at:])
        return "".join(out)

    def _fragments(self, text: str, *, at_end: bool) -> Iterator[int]:
        """The length of the longest part of each value that the text ends with (a prefix of it) or starts with
        (a suffix), `min_length` characters or more; a whole value is found by the search anyway."""
        for value in self._values:
            n = _longest_prefix_at_end(text, value) if at_end else _longest_suffix_at_start(text, value)
            if n >= self.min_length:
                yield n


def _longest_prefix_at_end(text: str, value: str) -> int:
    """How many characters of the start of `value` the text ends with (fewer than all of it)."""
    window = text[-(len(value) - 1) :] if len(value) > 1 else ""
    at = window.find(value[0])
    while at != -1:
        if value.startswith(window[at:]):
            return len(window) - at
        at = window.find(value[0], at + 1)
    return 0


def _longest_suffix_at_start(text: str, value: str) -> int:
    """How many characters of the end of `value` the text starts with (fewer than all of it)."""
    window = text[: len(value) - 1]
    at = window.rfind(value[-1])
    while at != -1:
        if value.endswith(window[: at + 1]):
            return at + 1
        at = window.rfind(value[-1], 0, at)
    return 0


def encoded_forms(value: str) -> set[str]:
    """The value as a URL (percent-encoded, `+` for a space or not) and inside a JSON string, where those differ
    from it: a runtime logs its database URL or a JSON document with the secret in it. See docs/masking.md for
    the forms that are not masked (base64, hex, any other transformation)."""
    forms = {
        quote(value, safe=""),
        quote_plus(value, safe=""),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    return forms - {value}


def _occurrences(text: str, value: str) -> Iterator[tuple[int, int]]:
    """Every (start, end) of `value` in `text`, overlapping ones included."""
    at = text.find(value)
    while at != -1:
        yield at, at + len(value)
        at = text.find(value, at + 1)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans sorted, and those that overlap joined into one (two secrets side by side stay two masks)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
