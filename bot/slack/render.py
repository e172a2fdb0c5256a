"""What a list or history page shows, read from the store: the screens more than one kind of
listener answers with (a command opens them, a button pages through them)."""

from __future__ import annotations

from dataclasses import dataclass

from storage import InvalidInput, Store
from storage.timeutil import utcnow

from . import blocks
from .values import HistoryView, ListView


@dataclass(frozen=True)
class Answer:
    text: str
    blocks: list[dict]


def message(text: str) -> Answer:
    return Answer(text, blocks.text_message(text))


def help_answer(problem: str | None = None) -> Answer:
    return Answer("apikeys help", blocks.help_blocks(problem))


def key_list(store: Store, view: ListView, *, admin: bool) -> Answer:
    """A page of the key list; a cursor that does not parse (an altered button) shows the first page."""
    now = utcnow()
    try:
        page = store.keys.list_keys(status=view.status, owner=view.owner, limit=blocks.KEYS_PER_PAGE,
                                    after=view.after, before=view.before, now=now)
    except InvalidInput:
        view = view.first_page()
        page = store.keys.list_keys(status=view.status, owner=view.owner, limit=blocks.KEYS_PER_PAGE, now=now)
    total = store.keys.count_keys(status=view.status, owner=view.owner, now=now, cap=blocks.COUNT_CAP)
    return Answer(f"{blocks.STATUS_TITLES[view.status]}", blocks.key_list(page, view, total, now, admin=admin))


def history(store: Store, view: HistoryView) -> Answer:
    key = store.keys.get(view.key_id) if view.key_id else None
    per_page = blocks.EVENTS_PER_PAGE
    events = store.audit.recent(limit=per_page + 1, key_id=view.key_id, before_id=view.before_id,
                                after_id=view.after_id)
    if view.after_id is not None:  # paging back towards the newest: the extra entry is the newest one
        has_newer, events = len(events) > per_page, events[-per_page:]
        has_older = True
    else:
        has_older, events = len(events) > per_page, events[:per_page]
        has_newer = view.before_id is not None
    return Answer("Audit history", blocks.history_blocks(events, view, has_older=has_older, has_newer=has_newer, key=key))
