"""Key-shaped text is never stored, logged or shown: the one masking function.

Anything shaped like one of our keys (the prefix, an underscore and eight or more base62
characters, glued to other text or not) is replaced by its masked form plus ``[redacted]``:
``apk_…a1b2[redacted]``. The match is deliberately wider than a valid key (no checksum, no
length limit): a truncated or mistyped copy of a secret is still most of a secret.

Every service in ``storage`` runs the free text it writes (actors, notes, audit details, names
it accepts) through here, and the bot's logging, Slack output and replies do the same as a last
line of defence.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from typing import Any

from .keyformat import KEY_PREFIX, MASK_ELLIPSIS, TOKEN_PREFIX

# Keys (apk_) and the management API's admin tokens (apkt_) alike.
KEY_LIKE_RE = re.compile(rf"({KEY_PREFIX}|{TOKEN_PREFIX})_[0-9A-Za-z]{{8,}}")
_MARKER = f"{KEY_PREFIX}_"
_TOKEN_MARKER = f"{TOKEN_PREFIX}_"


def _masked(match: re.Match) -> str:
    return f"{match.group(1)}_{MASK_ELLIPSIS}{match.group(0)[-4:]}[redacted]"


def _decoded(text: str) -> str | None:
    """``text`` with the encodings a URL or a web page carries undone (percent-encoding, applied up to
    three times over, and HTML character references), when that reveals a key-shaped string; else None."""
    if "%" not in text and "&" not in text:
        return None
    decoded = text
    for _ in range(3):
        step = html.unescape(urllib.parse.unquote(decoded)) if "%" in decoded or "&" in decoded else decoded
        if step == decoded:
            break
        decoded = step
    if decoded != text and (_MARKER in decoded or _TOKEN_MARKER in decoded) and KEY_LIKE_RE.search(decoded):
        return decoded
    return None


def redact(text: str) -> str:
    """``text`` with every key-shaped string masked. A key that only shows once the text is decoded
    (``apk%5F…`` in a URL, ``apk&#95;…`` in a page) is masked in the decoded text, which is what is
    then kept: the encoded secret never survives."""
    decoded = _decoded(text)
    if decoded is not None:
        text = decoded
    elif _MARKER not in text and _TOKEN_MARKER not in text:
        return text
    return KEY_LIKE_RE.sub(_masked, text)


def looks_like_key(text: str) -> bool:
    return (((_MARKER in text or _TOKEN_MARKER in text) and KEY_LIKE_RE.search(text) is not None)
            or _decoded(text) is not None)


def _encodable(text: str) -> str:
    """``text`` as it can be stored: a lone surrogate (valid in JSON, not in UTF-8) becomes U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


# The shortest text that can hold anything key-shaped: the prefix, its underscore and eight characters
# (an encoded form, ``apk%5F…``, is only longer). Shorter strings are made storable and left as they are.
_SHORTEST = len(KEY_PREFIX) + 1 + 8


def _clean(text: str) -> str:
    text = _encodable(text)
    return text if len(text) < _SHORTEST else redact(text)


def redact_value(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with every string in it redacted,
    dictionary keys included, and made storable (a lone surrogate replaced)."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(k) if isinstance(k, str) else k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value
