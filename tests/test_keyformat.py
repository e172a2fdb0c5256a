"""The key format: recognisable, typo-proof, and checkable without a database."""

from __future__ import annotations

import random
import re
import string
import zlib

import pytest

from storage import keyformat
from storage.keyformat import find_keys_in_text, generate_secret, is_well_formed, mask

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
KEY_SHAPE = re.compile(r"^apk_[0-9A-Za-z]{28}$")
PREFIX_LEN = len("apk_")
RANDOM_LEN = 22


def _with_checksum(body: str) -> str:
    """A string whose trailing 6 characters are the base62 CRC32 of ``body`` (the documented format)."""
    return body + keyformat.b62encode(zlib.crc32(body.encode("ascii")), 6)


def _replace(secret: str, position: int, char: str) -> str:
    return secret[:position] + char + secret[position + 1:]


# -- generation ---------------------------------------------------------------------------
def test_generated_secret_has_prefix_and_28_base62_characters():
    for _ in range(50):
        secret = generate_secret()
        assert KEY_SHAPE.match(secret), secret
        assert len(secret) == 32


def test_generated_secrets_are_unique():
    secrets = [generate_secret() for _ in range(1000)]
    assert len(set(secrets)) == 1000
    # The random part alone is unique too (the checksum does not make them unique).
    assert len({s[PREFIX_LEN:PREFIX_LEN + RANDOM_LEN] for s in secrets}) == 1000


def test_generated_secrets_are_well_formed():
    for _ in range(1000):
        assert is_well_formed(generate_secret())


def test_generated_secrets_use_the_whole_alphabet():
    # A sanity check that the random part is not, e.g., hex or digits only.
    seen = set("".join(generate_secret()[PREFIX_LEN:] for _ in range(200)))
    assert seen == set(BASE62)


# -- checksum catches typos -----------------------------------------------------------------
@pytest.mark.parametrize("position", range(PREFIX_LEN, PREFIX_LEN + RANDOM_LEN))
def test_one_changed_character_in_the_random_part_fails_the_checksum(position):
    rng = random.Random(position)
    for _ in range(5):
        secret = generate_secret()
        for replacement in rng.sample([c for c in BASE62 if c != secret[position]], 8):
            typo = _replace(secret, position, replacement)
            assert KEY_SHAPE.match(typo)  # still has the right shape...
            assert not is_well_formed(typo), (position, replacement)  # ...but is rejected


@pytest.mark.parametrize("position", range(PREFIX_LEN + RANDOM_LEN, 32))
def test_one_changed_character_in_the_checksum_fails(position):
    secret = generate_secret()
    for replacement in BASE62:
        if replacement != secret[position]:
            assert not is_well_formed(_replace(secret, position, replacement))


def test_swapped_adjacent_characters_fail_the_checksum():
    secret = generate_secret()
    for i in range(PREFIX_LEN, 31):
        if secret[i] != secret[i + 1]:
            swapped = secret[:i] + secret[i + 1] + secret[i] + secret[i + 2:]
            assert not is_well_formed(swapped), i


def test_changed_case_fails_the_checksum():
    secret = generate_secret()
    flipped = next(i for i in range(PREFIX_LEN, 32) if secret[i].isalpha())
    assert not is_well_formed(_replace(secret, flipped, secret[flipped].swapcase()))


# -- things that are not keys ----------------------------------------------------------------
@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "hello",
        "apk_",
        "apk_" + "A" * 28,
        "not a key at all, just some words here",
        "0" * 32,
        "sk_live_" + "a" * 24,
    ],
)
def test_arbitrary_strings_are_not_well_formed(candidate):
    assert not is_well_formed(candidate)


def test_random_strings_of_the_right_shape_are_not_well_formed():
    rng = random.Random(1234)
    accepted = [
        s for s in ("apk_" + "".join(rng.choice(BASE62) for _ in range(28)) for _ in range(2000))
        if is_well_formed(s)
    ]
    assert accepted == []


def test_wrong_prefix_is_not_well_formed_even_with_a_matching_checksum():
    secret = generate_secret()
    random_part = secret[PREFIX_LEN:PREFIX_LEN + RANDOM_LEN]
    for prefix in ("xyz_", "APK_", "apk-", "ap_k", "key_"):
        assert not is_well_formed(_with_checksum(prefix + random_part)), prefix
    # Control: the helper builds a valid key with the right prefix.
    assert is_well_formed(_with_checksum("apk_" + random_part))


def test_wrong_length_is_not_well_formed():
    secret = generate_secret()
    assert not is_well_formed(secret + "a")
    assert not is_well_formed(secret[:-1])
    assert not is_well_formed(secret + "\n")
    assert not is_well_formed(" " + secret)
    random_part = secret[PREFIX_LEN:PREFIX_LEN + RANDOM_LEN]
    # Too short or too long, each with a checksum that matches its own body.
    assert not is_well_formed(_with_checksum("apk_" + random_part[:-1]))
    assert not is_well_formed(_with_checksum("apk_" + random_part + "x"))


@pytest.mark.parametrize("candidate", [None, 123, 1.5, ["apk_"], {"key": "apk_"}])
def test_non_strings_are_not_well_formed(candidate):
    assert is_well_formed(candidate) is False


def test_bytes_of_a_valid_key_are_not_well_formed():
    secret = generate_secret()
    assert is_well_formed(secret)
    assert is_well_formed(secret.encode()) is False


def test_non_ascii_lookalike_characters_are_not_well_formed():
    secret = generate_secret()
    # Fullwidth digit / Cyrillic 'а' in place of one character.
    assert not is_well_formed(_replace(secret, 10, "\uff11"))
    assert not is_well_formed(_replace(secret, 10, "\u0430"))


# -- masking ---------------------------------------------------------------------------------
def test_mask_shows_prefix_ellipsis_and_last_four():
    secret = generate_secret()
    masked = mask(keyformat.KEY_PREFIX, keyformat.last4(secret))
    assert masked == "apk_\u2026" + secret[-4:]
    assert secret not in masked
    assert secret[PREFIX_LEN:-4] not in masked


def test_mask_of_fixed_values():
    assert mask("apk", "a1b2") == "apk_…a1b2"


# -- keys in free text -----------------------------------------------------------------------
def test_finds_keys_surrounded_by_punctuation():
    k1, k2, k3, k4 = (generate_secret() for _ in range(4))
    text = (
        f"deploy with token={k1}, then ({k2}). Quoted: '{k3}' and \"{k4}\"!\n"
        f"<{k1}> [{k2}]"
    )
    assert find_keys_in_text(text) == [k1, k2, k3, k4]


def test_finds_keys_at_start_end_and_on_their_own_lines():
    k1, k2 = generate_secret(), generate_secret()
    assert find_keys_in_text(k1) == [k1]
    assert find_keys_in_text(f"{k1}\n{k2}") == [k1, k2]
    assert find_keys_in_text(f"export API_KEY={k1};curl -H 'X-API-Key: {k2}'") == [k1, k2]
    assert find_keys_in_text(f"https://example.com/cb?key={k1}&x=1") == [k1]


def test_found_keys_are_deduplicated_in_order_of_first_appearance():
    k1, k2 = generate_secret(), generate_secret()
    text = f"{k2} {k1} {k2} {k1} {k2}"
    assert find_keys_in_text(text) == [k2, k1]


def test_lookalikes_with_a_bad_checksum_are_ignored():
    good = generate_secret()
    bad = _replace(good, 12, "0" if good[12] != "0" else "1")
    other = generate_secret()
    assert find_keys_in_text(f"leaked: {bad} and {other}") == [other]
    assert find_keys_in_text(f"apk_{'A' * 28} apk_{'z' * 28}") == []


def test_keys_glued_to_other_text_are_found():
    """A leak is a leak however it was pasted: env files, URL-encoded query strings, no space after."""
    k = generate_secret()
    for text in (f"x{k}", f"9{k}", f"_{k}", f"APIKEY_{k}", f"APIKEY={k}", f"{k},", f"{k}Z", f"{k}0abc",
                 f"abc{k}def", f"api_key%3D{k}%26x", f"x {k} Z", f"apk_{k}"):
        assert find_keys_in_text(text) == [k], text
    other = generate_secret()
    assert find_keys_in_text(f"{k}{other}") == [k, other]


def test_text_without_keys_gives_nothing():
    assert find_keys_in_text("") == []
    assert find_keys_in_text(None) == []
    assert find_keys_in_text("apk_ is our prefix; keys look like apk_…a1b2") == []


@pytest.mark.parametrize("lookalike", ["\u0661", "\uff21", "\u00e9", "_", "-", " "])
def test_a_non_ascii_or_non_alphanumeric_character_is_not_well_formed_even_with_a_matching_checksum(lookalike):
    """Unicode digits and letters are alphanumeric to Python, but never part of our alphabet; a
    key-shaped string carrying one is refused by its shape even when its checksum is recomputed."""
    random_part = generate_secret()[PREFIX_LEN:PREFIX_LEN + RANDOM_LEN]
    body = "apk_" + lookalike + random_part[1:]
    assert not is_well_formed(body + keyformat.b62encode(zlib.crc32(body.encode("utf-8")), 6))
    checksummed = _with_checksum("apk_" + random_part)
    assert not is_well_formed(checksummed[:-1] + lookalike)
