"""Action ids and block ids, in one place."""

from __future__ import annotations

import enum


class ActionId(str, enum.Enum):
    REVOKE = "apikeys.revoke"                 # "Revoke" on a list row: open the confirmation
    CANCEL_REVOKE = "apikeys.revoke.cancel"   # "Cancel Revoke Key": back to the list
    CONFIRM_REVOKE = "apikeys.revoke.confirm"  # "Revoke Key": do it
    REASON = "apikeys.revoke.reason"          # the optional reason select
    PAGE_NEXT = "apikeys.page.next"           # "Next" (list and history)
    PAGE_PREV = "apikeys.page.prev"           # "Previous"
    SHOW_LIST = "apikeys.list"                # "Back to keys"
    CONFIRM_REVOKE_OWNER = "apikeys.revoke_owner.confirm"  # "Revoke N Keys"
    CANCEL_REVOKE_OWNER = "apikeys.revoke_owner.cancel"    # "Cancel Revoke Key" on the bulk card


class BlockId(str, enum.Enum):
    REASON = "apikeys_reason"
    CONFIRM_ACTIONS = "apikeys_confirm_actions"
    PAGER = "apikeys_pager"
