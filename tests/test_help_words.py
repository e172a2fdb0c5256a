"""Every word ``/apikeys`` understands is in its help and in the manifest's usage hint, and every
word they list is understood: the words are declared once (``blocks.HELP_LINES``)."""

from __future__ import annotations

import json

import pytest
import yaml

from bot.slack import blocks, commands

from .helpers import ROOT

# The words people are told about (the contract's list, and those added since).
DOCUMENTED = ["list", "revoked", "expired", "all", "owner payments", "find abcd", "history", "owners",
              "revoke-owner payments", "admins", "admins add <@U0NEW0001>", "admins remove <@U0NEW0001>", "help"]


def usage_hint() -> str:
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    return command["usage_hint"]


def text_of(answer) -> str:
    return json.dumps(answer.blocks)


def test_the_manifest_usage_hint_names_every_word():
    hint = usage_hint().replace("[", " ").replace("]", " ").replace("|", " ").split()
    assert sorted(blocks.HELP_WORDS - set(hint)) == []
    assert {"add", "remove"} <= set(hint)


def test_the_help_names_every_word():
    helped = text_of(commands.answer(None, "help"))
    for word in blocks.HELP_WORDS:
        assert f"/apikeys {word}" in helped or f"/apikeys [{word}]" in helped, word


@pytest.mark.parametrize("text", DOCUMENTED)
def test_every_documented_word_is_understood(store, text):
    answered = text_of(commands.answer(store, text))
    assert "I don't know" not in answered, text
    assert text.split()[0] in blocks.HELP_WORDS


def test_a_word_outside_the_help_is_not_understood(store):
    assert "I don't know" in text_of(commands.answer(store, "frobnicate"))
