"""Action ids and block ids, in one place."""

from __future__ import annotations

import enum
import re


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

    @classmethod
    def pattern(cls, *ids: ActionId) -> re.Pattern[str]:
        """A Bolt constraint matching exactly ``ids`` (none given: any action id at all)."""
        if not ids:
            return re.compile(r".*")
        return re.compile("^(?:" + "|".join(re.escape(i.value) for i in ids) + ")$")


class BlockId(enum.StrEnum):
    REASON = "apikeys_reason"
    CONFIRM_ACTIONS = "apikeys_confirm_actions"
    PAGER = "apikeys_pager"
