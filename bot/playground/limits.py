"""Slack's limits on messages and Block Kit, checked in one place.

``slack_limit_problems`` names every way a message (or a list of blocks) breaks one of Slack's
limits. The stand-in (``slackstub.SlackStub``) runs it over every message it receives and refuses
blocks that break one with ``invalid_blocks``, as Slack does; the tests run it over what the
renderers produce.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LIMITS", "MAX_BLOCKS", "MAX_TEXT", "breaks_block_limits", "slack_limit_problems"]

MAX_BLOCKS = 50
MAX_TEXT = 40_000
"""Slack truncates a message's ``text`` beyond this (chat.postMessage answers ``msg_too_long``)."""

# Slack's limits (Block Kit reference: blocks, block elements, composition objects; chat.postMessage).
LIMITS: dict[str, int] = {
    "blocks": MAX_BLOCKS,             # blocks in one message
    "text": 4_000,                    # a message's top-level ``text``: Slack recommends at most 4,000
    "block_id": 255,                  # and unique within the message
    "section.text": 3_000,
    "section.fields": 10,
    "section.field": 2_000,
    "header.text": 150,
    "context.elements": 10,
    "actions.elements": 25,
    "text_object": 3_000,             # any other text object
    "action_id": 255,                 # and unique within its block
    "button.text": 75,
    "button.value": 2_000,
    "button.url": 3_000,
    "select.placeholder": 150,
    "select.options": 100,
    "option.text": 75,
    "option.value": 150,
    "option.description": 75,
    "input.label": 2_000,             # plain_text only
    "input.placeholder": 150,
    "input.max_length": 3_000,        # a plain-text input's max_length
}
_BUTTON_STYLES = frozenset({"primary", "danger"})


def _text_of(obj: Any) -> str | None:
    """The string of a text object (``{"type": ..., "text": ...}``), or None when it is not one."""
    if isinstance(obj, Mapping) and isinstance(obj.get("text"), str):
        return obj["text"]
    return None


def _check_text(problems: list[str], where: str, obj: Any, limit: str, *, required: bool = True) -> None:
    if obj is None and not required:
        return
    text = _text_of(obj)
    if text is None:
        problems.append(f"{where}: not a text object")
    elif not text:
        problems.append(f"{where}: empty text (Slack requires at least 1 character)")
    elif len(text) > LIMITS[limit]:
        problems.append(f"{where}: {len(text):,} characters, Slack allows {LIMITS[limit]:,}")


def _check_length(problems: list[str], where: str, value: Any, limit: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        problems.append(f"{where}: not a string")
    elif len(value) > LIMITS[limit]:
        problems.append(f"{where}: {len(value):,} characters, Slack allows {LIMITS[limit]:,}")


def _check_option(problems: list[str], where: str, option: Any) -> None:
    if not isinstance(option, Mapping):
        problems.append(f"{where}: not an option object")
        return
    _check_text(problems, f"{where}.text", option.get("text"), "option.text")
    _check_length(problems, f"{where}.value", option.get("value"), "option.value")
    _check_text(problems, f"{where}.description", option.get("description"), "option.description", required=False)


def _check_id(problems: list[str], where: str, value: Any, limit: str, seen: set[str], scope: str) -> None:
    """An action_id or block_id: within its length limit, and used once in its ``scope``."""
    _check_length(problems, where, value, limit)
    if isinstance(value, str):
        if value in seen:
            problems.append(f"{where}: {value!r} is used twice in one {scope}")
        seen.add(value)


def _check_element(problems: list[str], where: str, element: Any, action_ids: set[str]) -> None:
    if not isinstance(element, Mapping):
        problems.append(f"{where}: not an element object")
        return
    _check_id(problems, f"{where}.action_id", element.get("action_id"), "action_id", action_ids, "block")
    kind = element.get("type")
    if kind == "button":
        _check_text(problems, f"{where}.text", element.get("text"), "button.text")
        _check_length(problems, f"{where}.value", element.get("value"), "button.value")
        _check_length(problems, f"{where}.url", element.get("url"), "button.url")
        if "style" in element and element["style"] not in _BUTTON_STYLES:
            problems.append(f"{where}.style: {element['style']!r} is not primary or danger")
    elif kind in ("static_select", "multi_static_select"):
        _check_text(problems, f"{where}.placeholder", element.get("placeholder"), "select.placeholder",
                    required=False)
        options = element.get("options")
        if not isinstance(options, list) or not options:
            problems.append(f"{where}.options: a static select needs a list of 1 to 100 options")
            return
        if len(options) > LIMITS["select.options"]:
            problems.append(f"{where}.options: {len(options)} options, Slack allows {LIMITS['select.options']}")
        for i, option in enumerate(options):
            _check_option(problems, f"{where}.options[{i}]", option)
        initial = element.get("initial_option")
        if initial is not None and initial not in options:
            problems.append(f"{where}.initial_option: not one of the options")
    elif kind == "plain_text_input":
        _check_text(problems, f"{where}.placeholder", element.get("placeholder"), "input.placeholder", required=False)
        length = element.get("max_length")
        if length is not None and (not isinstance(length, int) or not 1 <= length <= LIMITS["input.max_length"]):
            problems.append(f"{where}.max_length: {length!r}, Slack allows 1 to {LIMITS['input.max_length']:,}")


def _check_block(problems: list[str], where: str, block: Any, block_ids: set[str]) -> None:
    if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
        problems.append(f"{where}: not a block object")
        return
    _check_id(problems, f"{where}.block_id", block.get("block_id"), "block_id", block_ids, "message")
    action_ids: set[str] = set()
    kind = block["type"]
    if kind == "section":
        fields = block.get("fields")
        if "text" in block or fields is None:
            _check_text(problems, f"{where}.text", block.get("text"), "section.text")
        if fields is not None:
            if not isinstance(fields, list) or not fields:
                problems.append(f"{where}.fields: not a list of 1 to 10 text objects")
            else:
                if len(fields) > LIMITS["section.fields"]:
                    problems.append(f"{where}.fields: {len(fields)} fields, Slack allows {LIMITS['section.fields']}")
                for i, item in enumerate(fields):
                    _check_text(problems, f"{where}.fields[{i}]", item, "section.field")
        if block.get("accessory") is not None:
            _check_element(problems, f"{where}.accessory", block["accessory"], action_ids)
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            problems.append(f"{where}.elements: an actions block needs 1 to 25 elements")
            return
        if len(elements) > LIMITS["actions.elements"]:
            problems.append(f"{where}.elements: {len(elements)} elements, Slack allows {LIMITS['actions.elements']}")
        for i, element in enumerate(elements):
            _check_element(problems, f"{where}.elements[{i}]", element, action_ids)
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            problems.append(f"{where}.elements: a context block needs 1 to 10 elements")
            return
        if len(elements) > LIMITS["context.elements"]:
            problems.append(f"{where}.elements: {len(elements)} elements, Slack allows {LIMITS['context.elements']}")
        for i, element in enumerate(elements):
            if isinstance(element, Mapping) and element.get("type") in ("mrkdwn", "plain_text"):
                _check_text(problems, f"{where}.elements[{i}]", element, "text_object")
    elif kind == "header":
        _check_text(problems, f"{where}.text", block.get("text"), "header.text")
    elif kind == "input":
        label = block.get("label")
        if not isinstance(label, Mapping) or label.get("type") != "plain_text":
            problems.append(f"{where}.label: an input block needs a plain_text label")
        else:
            _check_text(problems, f"{where}.label", label, "input.label")
        element = block.get("element")
        if not isinstance(element, Mapping) or element.get("type") not in ("plain_text_input", "static_select"):
            problems.append(f"{where}.element: an input block needs one input element")
        else:
            _check_element(problems, f"{where}.element", element, action_ids)


def slack_limit_problems(payload: Any) -> list[str]:
    """Every way ``payload`` breaks one of Slack's limits, one line each; empty when none does.

    ``payload`` is a message (a dict with ``text`` and/or ``blocks``: a chat.postMessage body, a
    ``response_url`` payload, a slash command's ack) or a list of blocks. Checked: at most 50
    blocks; block ids at most 255 characters and unique in the message; section text 1 to 3,000
    characters, at most 10 fields of at most 2,000; at most 10 context and 25 actions elements;
    action ids at most 255 characters and unique in their block; button text 1 to 75 characters,
    value at most 2,000, style primary or danger; static selects with 1 to 100 options whose text
    is at most 75 characters and value at most 150 (``initial_option`` one of them); input blocks
    with a plain_text label and a plain-text input (placeholder at most 150, max_length 1 to 3,000); and the
    message ``text`` at most 4,000 characters (what Slack recommends; it truncates at 40,000).
    The stub answers ``invalid_blocks`` when the blocks break a limit, as Slack does.
    """
    problems: list[str] = []
    if isinstance(payload, Mapping):
        text = payload.get("text")
        if text is not None and not isinstance(text, str):
            problems.append("text: not a string")
        elif isinstance(text, str) and len(text) > LIMITS["text"]:
            problems.append(f"text: {len(text):,} characters, Slack recommends at most {LIMITS['text']:,}"
                            f" (and truncates at {MAX_TEXT:,})")
        if "blocks" not in payload:
            return problems
        blocks = payload["blocks"]
        if isinstance(blocks, str):  # form-encoded: a JSON string the stub could not decode
            problems.append("blocks: not valid JSON")
            return problems
    else:
        blocks = payload
    if not isinstance(blocks, list):
        problems.append("blocks: not a list of blocks")
        return problems
    if len(blocks) > LIMITS["blocks"]:
        problems.append(f"blocks: {len(blocks)} blocks, Slack allows {LIMITS['blocks']}")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        _check_block(problems, f"blocks[{i}]", block, block_ids)
    return problems


def breaks_block_limits(message: Mapping[str, Any]) -> bool:
    """Whether Slack would refuse ``message``'s blocks (``invalid_blocks``); a long ``text`` it truncates."""
    return "blocks" in message and any(not p.startswith("text:") for p in slack_limit_problems(message))
