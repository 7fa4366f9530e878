"""Text from elsewhere made safe to keep and to show: no lone surrogates, no terminal controls, bounded in bytes."""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 controls but tab, and DEL: they move the cursor, clear the screen or retitle the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
CUT_MARK = " [... cut: {size} bytes in all; lines are kept to {limit} bytes]"


def forbidden_character(text: str) -> str | None:
    """The first control character (a trailing newline included) or lone surrogate in a value that must have
    none, named by its code point; None when there is none. (A schema `pattern` ending in `$` lets a final
    newline through: Python's `$` matches before it.)"""
    found = _FORBIDDEN.search(text)
    if found is None:
        return None
    kind = "a lone surrogate" if _SURROGATE.match(found.group()) else "a control character"
    return f"{kind} (U+{ord(found.group()):04X}) at character {found.start() + 1}"


def unicode_safe(text: str) -> str:
    """The text with every lone surrogate written as its escape (`\\ud800`): it can then be encoded as UTF-8."""
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def shorten(text: str, limit: int = 300) -> str:
    """Text from a request, fit to keep in a log line or an audit record: valid Unicode, at most `limit` chars."""
    text = unicode_safe(text)
    return text if len(text) <= limit else f"{text[: limit - 30]}... ({len(text)} chars in all)"


def quoted(text: str, *, limit: int = 200) -> str:
    """A value from a request, fit for a message, a log line or an audit record: its repr, at most `limit` chars."""
    shown = repr(unicode_safe(text))
    return shown if len(shown) <= limit else shown[: limit - 5] + "...'" + f" ({len(text)} chars)"


def visible(text: str) -> str:
    """The text with format characters (bidi overrides and isolates U+202A-U+202E, U+2066-U+2069; zero-width and
    direction marks U+200B-U+200F; every other Unicode `Cf`) and lone surrogates shown as escapes (`\\u202e`):
    they reorder or hide what a person reads. The page and the CLI both show text through this."""
    text = unicode_safe(text)
    if text.isascii() or not any(unicodedata.category(c) == "Cf" for c in text):
        return text
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cf" else c for c in text)


def printable(text: str) -> str:
    """The text for a terminal: terminal controls (all but tab) shown as escapes, never acted on, and what
    `visible` escapes."""
    text = visible(text)
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def clip_line(line: str, limit: int, *, size: int | None = None) -> str:
    """A line cut to at most `limit` UTF-8 bytes (plus a note saying so). `size` is the line's real size when
    the caller already dropped what it could never show (a 10 MB line is not kept whole to be cut here)."""
    data = line.encode("utf-8", "surrogatepass")
    size = max(size or 0, len(data))
    if size <= limit:
        return line
    kept = data[:limit].decode("utf-8", "ignore")
    return kept + CUT_MARK.format(size=size, limit=limit)
