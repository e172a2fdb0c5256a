"""Action ids and block ids, in one place."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from storage import Action


class ActionId(enum.StrEnum):
    REVOKE = "apikeys.revoke"                 # "Revoke" on a list row: open the confirmation
    CANCEL_REVOKE = "apikeys.revoke.cancel"   # "Cancel Revoke Key": back to the list
    CONFIRM_REVOKE = "apikeys.revoke.confirm"  # "Revoke Key": do it
    REASON = "apikeys.revoke.reason"          # the optional reason select
    PAGE_NEXT = "apikeys.page.next"           # "Next" (list and history)
    PAGE_PREV = "apikeys.page.prev"           # "Previous"
    SHOW_LIST = "apikeys.list"                # "Back to keys"
    CONFIRM_REVOKE_OWNER = "apikeys.revoke_owner.confirm"  # "Revoke N Keys"
    CANCEL_REVOKE_OWNER = "apikeys.revoke_owner.cancel"    # "Cancel Revoke Key" on the bulk card
    ROTATE = "apikeys.rotate"                 # "Rotate" on a row or card: open the rotation confirmation
    CANCEL_ROTATE = "apikeys.rotate.cancel"   # "Cancel Rotate Key"
    CONFIRM_ROTATE = "apikeys.rotate.confirm"  # "Rotate Key": do it
    GRACE = "apikeys.rotate.grace"            # the grace-period select
    NOTE = "apikeys.note"                     # the optional note (a plain-text input)
    HISTORY = "apikeys.history"               # "History" on a key card

    @classmethod
    def pattern(cls, *ids: ActionId) -> re.Pattern[str]:
        """A Bolt constraint matching exactly ``ids`` (none given: any action id at all)."""
        if not ids:
            return re.compile(r".*")
        return re.compile("^(?:" + "|".join(re.escape(i.value) for i in ids) + ")$")


@dataclass(frozen=True)
class Refusal:
    """What a refused click would have done: the answer's first words, and the audit action recorded."""

    verb: str
    action: Action


_REVOKE = Refusal("Not revoked", Action.KEY_REVOKE_DENIED)
_ROTATE = Refusal("Not rotated", Action.KEY_ROTATE_DENIED)
_SHOW = Refusal("Not shown", Action.KEY_REVOKE_DENIED)  # a look at a key or a page, refused (another workspace)
REFUSALS: dict[str, Refusal] = {
    ActionId.CONFIRM_REVOKE: _REVOKE, ActionId.CONFIRM_REVOKE_OWNER: _REVOKE, ActionId.CONFIRM_ROTATE: _ROTATE,
    ActionId.REVOKE: Refusal("Not opened", Action.KEY_REVOKE_DENIED),
    ActionId.ROTATE: Refusal("Not opened", Action.KEY_ROTATE_DENIED),
    ActionId.CANCEL_ROTATE: _SHOW, ActionId.HISTORY: _SHOW,
    ActionId.PAGE_NEXT: _SHOW, ActionId.PAGE_PREV: _SHOW, ActionId.SHOW_LIST: _SHOW,
    ActionId.CANCEL_REVOKE: _SHOW, ActionId.CANCEL_REVOKE_OWNER: _SHOW,
}
NOT_DONE = Refusal("Not done", Action.KEY_REVOKE_DENIED)


def refusal_of(action_id: object) -> Refusal:
    """How a refused click with this action id is answered and recorded."""
    return REFUSALS.get(action_id, NOT_DONE) if isinstance(action_id, str) else NOT_DONE


class BlockId(enum.StrEnum):
    REASON = "apikeys_reason"
    CONFIRM_ACTIONS = "apikeys_confirm_actions"
    PAGER = "apikeys_pager"
    GRACE = "apikeys_grace"
    NOTE = "apikeys_note"
