"""The key format: ``apk_<22 base62 random><6 base62 CRC32>``.

* 16 random bytes (128 bits) from the OS CSPRNG, written as 22 base62 characters;
* a CRC32 of everything before it, written as 6 base62 characters, so that a typo or a
  random string is recognised as "not one of ours" without touching the database;
* only a SHA-256 digest of the whole secret is ever stored. The secrets carry 128 bits of
  entropy, so a fast digest is the right tool (a slow password hash buys nothing here).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import zlib

KEY_PREFIX = "apk"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_BYTES = 16
RANDOM_CHARS = 22  # 62**22 > 2**128
CHECKSUM_CHARS = 6  # 62**6 > 2**32
KEY_LENGTH = len(KEY_PREFIX) + 1 + RANDOM_CHARS + CHECKSUM_CHARS
MASK_ELLIPSIS = "\u2026"

KEY_RE = re.compile(rf"^{KEY_PREFIX}_[0-9A-Za-z]{{{RANDOM_CHARS + CHECKSUM_CHARS}}}$")
# Used to spot keys inside free text (chat messages, pasted logs), glued to other text or not
# (``APIKEY_apk_…``, ``key%3Dapk_…``, ``apk_…xyz``): the checksum, not a word boundary, tells a key
# from a look-alike. A candidate cannot hide a key that starts inside it: its 28 characters after
# the prefix are all alphanumeric, and a key needs the underscore.
KEY_IN_TEXT_RE = re.compile(rf"{KEY_PREFIX}_[0-9A-Za-z]{{{RANDOM_CHARS + CHECKSUM_CHARS}}}")


_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # two digits per division: half the steps
_PAIR_VALUES = {pair: i for i, pair in enumerate(_PAIRS)}  # and back: three lookups read a checksum
_BODY_LENGTH = KEY_LENGTH - CHECKSUM_CHARS
_PREFIX_ = KEY_PREFIX + "_"


def b62encode(number: int, width: int) -> str:
    parts = []
    for _ in range(width // 2):
        number, rem = divmod(number, 3844)
        parts.append(_PAIRS[rem])
    if width % 2:
        number, rem = divmod(number, 62)
        parts.append(ALPHABET[rem])
    if number:
        raise ValueError("number does not fit in the requested width")
    return "".join(reversed(parts))


def _checksum(body: str) -> str:
    return b62encode(zlib.crc32(body.encode("ascii")), CHECKSUM_CHARS)


def generate_secret() -> str:
    body = f"{KEY_PREFIX}_{b62encode(int.from_bytes(os.urandom(RANDOM_BYTES), 'big'), RANDOM_CHARS)}"
    return body + _checksum(body)


TOKEN_PREFIX = "apkt"  # admin tokens of the management API: the same shape with their own prefix
TOKEN_LENGTH = len(TOKEN_PREFIX) + 1 + RANDOM_CHARS + CHECKSUM_CHARS
_TOKEN_BODY_LENGTH = TOKEN_LENGTH - CHECKSUM_CHARS


def generate_token() -> str:
    body = f"{TOKEN_PREFIX}_{b62encode(int.from_bytes(os.urandom(RANDOM_BYTES), 'big'), RANDOM_CHARS)}"
    return body + _checksum(body)


def is_well_formed_token(candidate: object) -> bool:
    """``is_well_formed`` for an admin token (``apkt_``): a key is never a token, nor the reverse."""
    if not isinstance(candidate, str) or len(candidate) != TOKEN_LENGTH or not candidate.startswith(TOKEN_PREFIX + "_"):
        return False
    tail = candidate[len(TOKEN_PREFIX) + 1:]
    if not (tail.isascii() and tail.isalnum()):
        return False
    check = candidate[_TOKEN_BODY_LENGTH:]
    value = (_PAIR_VALUES[check[:2]] * 3844 + _PAIR_VALUES[check[2:4]]) * 3844 + _PAIR_VALUES[check[4:]]
    return value == zlib.crc32(candidate[:_TOKEN_BODY_LENGTH].encode("ascii"))


def is_well_formed(candidate: object) -> bool:
    """True when ``candidate`` has our shape and a correct checksum. No database involved.

    On every verification, so the shape is checked with string methods (ASCII letters and digits
    after the prefix: what ``KEY_RE`` says) and the checksum is read back into a number rather
    than the body's CRC written out (the checksum is no secret: anyone can compute it)."""
    if not isinstance(candidate, str) or len(candidate) != KEY_LENGTH or not candidate.startswith(_PREFIX_):
        return False
    tail = candidate[len(_PREFIX_):]
    if not (tail.isascii() and tail.isalnum()):
        return False
    pairs = _PAIR_VALUES
    check = candidate[_BODY_LENGTH:]
    value = (pairs[check[:2]] * 3844 + pairs[check[2:4]]) * 3844 + pairs[check[4:]]
    return value == zlib.crc32(candidate[:_BODY_LENGTH].encode("ascii"))


def digest(secret: str) -> str:
    """The one-way digest stored and looked up instead of the secret (hex SHA-256)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def digests_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a, b)


def last4(secret: str) -> str:
    return secret[-4:]


def mask(prefix: str, last_four: str) -> str:
    """How a key is shown anywhere after creation: ``apk_…a1b2``."""
    return f"{prefix}_{MASK_ELLIPSIS}{last_four}"


def find_keys_in_text(text: str) -> list[str]:
    """Every well-formed key (checksum verified) in ``text``, in order, without duplicates."""
    seen: dict[str, None] = {}
    for match in KEY_IN_TEXT_RE.finditer(text or ""):
        if is_well_formed(match.group(0)):
            seen.setdefault(match.group(0), None)
    return list(seen)
