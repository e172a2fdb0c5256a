"""Who is acting, resolved once per request (a Bolt middleware puts it in ``context["actor"]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage import Store


@dataclass
class Actor:
    user_id: str | None
    user_team_id: str | None      # the workspace the user belongs to
    own_team_id: str | None       # the workspace this app is installed in (auth.test)
    channel_id: str | None
    request_id: str | None = None  # what makes this request unique (a slash command's trigger_id)
    # Every other workspace or organisation the request names (``team.id``, ``enterprise``): each
    # must be ours too. ``own_enterprise_id`` is the installation's Enterprise Grid org, if any.
    named_teams: tuple[str, ...] = ()
    enterprise_ids: tuple[str, ...] = ()
    own_enterprise_id: str | None = None
    _store: Store = field(repr=False, default=None)
    _is_admin: bool | None = field(default=None, repr=False)

    @property
    def elsewhere(self) -> str | None:
        """The first workspace or organisation the request names that is not this installation's
        (the user's own workspace first), or None when everything it names is ours."""
        if self.user_team_id and self.user_team_id != self.own_team_id:
            return self.user_team_id
        for team in self.named_teams:
            if team != self.own_team_id:
                return team
        for enterprise in self.enterprise_ids:
            if enterprise != self.own_enterprise_id:
                return enterprise
        return None

    @property
    def where(self) -> dict[str, str | None]:
        """Where the request came from, as audit entries record it."""
        return {"channel_id": self.channel_id, "team_id": self.user_team_id}

    @property
    def in_own_workspace(self) -> bool:
        """Whether the user is a member of the installation's workspace, and nothing in the request
        (its team, its Enterprise Grid org) names anyone else's."""
        return bool(self.user_team_id and self.own_team_id and self.user_team_id == self.own_team_id
                    and self.elsewhere is None)

    @property
    def is_admin(self) -> bool:
        """Admin role from APIKEYS_ADMINS or the stored admins (one lookup, then cached)."""
        if self._is_admin is None:
            self._is_admin = bool(self.user_id) and self._store.admins.is_admin(self.user_id)
        return self._is_admin

    def refusal(self) -> str | None:
        """Why this user may not perform an admin action, or None when they may."""
        if not self.user_id:
            return "Slack did not say who you are."
        if not self.in_own_workspace:
            return ("Only members of this app's own workspace can do this; you are signed in from another "
                    "workspace (for example in a shared channel).")
        if not self.is_admin:
            return f"Only apikeys admins can do this; ask {self.admins_to_ask()}."
        return None

    @property
    def sees_admin_buttons(self) -> bool:
        """Whether lists and cards show this user the buttons that change anything (a presentation
        choice only: every such button is still refused by ``require_admin`` to anyone else)."""
        return self.refusal() is None

    def admins_to_ask(self, shown: int = 5) -> str:
        """The admins, as mentions (``<@U1>, <@U2> or <@U3>``), for a refusal to name."""
        try:
            ids = [entry.user_id for entry in self._store.admins.list()]
        except Exception:  # the refusal matters more than the names
            ids = []
        if not ids:
            return "an operator to add an admin (`apikeys admins add USER_ID`)"
        mentions = [f"<@{user_id}>" for user_id in ids[:shown]]
        more = f" (or one of {len(ids) - shown} more: `/apikeys admins`)" if len(ids) > shown else ""
        return (", ".join(mentions[:-1]) + " or " + mentions[-1] if len(mentions) > 1 else mentions[0]) + more


def _get(body: dict, *path: str) -> Any:
    value: Any = body
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value if isinstance(value, str) and value else None


def _id(body: dict, name: str) -> str | None:
    """The id in ``body[name]``: an object's ``id``, or (in a flat form) the value itself, as Bolt reads it."""
    value = body.get(name)
    if isinstance(value, str) and value:
        return value
    return _get(body, name, "id")


def actor_from_body(body: dict, own_team_id: str | None, store: Store, own_enterprise_id: str | None = None) -> Actor:
    """Read the user, their home workspace and every workspace or organisation the request names
    from a command, interaction or event body."""
    if "command" in body:
        # A slash command only comes from the installing workspace's members: its team_id is the
        # user's workspace.
        user_id, user_team = _get(body, "user_id"), _get(body, "team_id")
        teams: tuple[str | None, ...] = (_id(body, "team"),)
        enterprises = (_get(body, "enterprise_id"), _id(body, "enterprise"))
    else:
        # An interaction names the user's own workspace in user.team_id, and nothing else will do:
        # the payload's team is the workspace the message lives in, which in a shared channel is
        # ours even when the user is someone else's. A missing user.team_id is a refusal.
        # Whatever else the payload names must be ours as well: the workspace it happened in
        # (team.id) and an Enterprise Grid organisation (enterprise.id, user.enterprise_id).
        user_id, user_team = _get(body, "user", "id"), _get(body, "user", "team_id")
        teams = (_id(body, "team"),)
        enterprises = (_id(body, "enterprise"), _get(body, "enterprise_id"), _get(body, "user", "enterprise_id"))
    channel_id = _get(body, "channel", "id") or _get(body, "channel_id") or _get(body, "container", "channel_id")
    return Actor(user_id=user_id, user_team_id=user_team, own_team_id=own_team_id, channel_id=channel_id,
                 request_id=_get(body, "trigger_id"), named_teams=tuple(t for t in teams if t),
                 enterprise_ids=tuple(e for e in enterprises if e), own_enterprise_id=own_enterprise_id, _store=store)
