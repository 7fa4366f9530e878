"""Secret values are wrapped once, where they enter, unwrapped only where they leave, and masked in foreign text."""

from __future__ import annotations

from collections.abc import Iterable

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

    The longest value goes first, so a secret that contains a shorter one is masked whole. Each line of a
    multi-line value (a PEM key) is masked too, so a log tail cut in the middle of it still hides the rest.
    Values shorter than `min_length` are left alone.
    """

    def __init__(self, values: Iterable[str | Secret], *, min_length: int = MIN_MASKED) -> None:
        pieces: set[str] = set()
        for value in map(reveal, values):
            pieces.add(value)
            pieces.update(line.strip() for line in value.splitlines())
        self.min_length = min_length
        self._values = sorted((p for p in pieces if len(p) >= min_length), key=lambda p: (-len(p), p))
        # The longest value in UTF-8 bytes: how far past a cut a secret can reach.
        self.longest = max((len(v.encode("utf-8", "surrogatepass")) for v in self._values), default=0)

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, text: str, *, cut: bool = False) -> str:
        """The text with every secret value masked. `cut`: the text was cut short of its end, so a secret may
        stand there only in part; any end of the text that begins a value (3 characters or more) is masked too."""
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        if cut:
            for value in self._values:
                start = next((n for n in range(len(value) - 1, self.min_length - 1, -1) if text.endswith(value[:n])), 0)
                if start:
                    text = text[:-start] + MASK
        return text
