"""The shape of the Slack app: authorization is one declaration per listener, listeners are plain
module-level functions, and no listener module leans on another."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from slack_bolt import App

from bot.slack import actions, authz, commands, events

LISTENER_MODULES = (commands, actions, events)
CHANGES_STATE = {actions.confirm, actions.confirm_owner, actions.confirm_rotation, commands.change_admins,
                 commands.revoke_owner}
# Open a confirmation: change nothing, but are for admins only (a member is told at once, naming the admins).
ADMIN_ONLY = {actions.open_confirmation, actions.open_rotation}


@pytest.fixture(scope="module")
def app() -> App:
    app = App(signing_secret="x", token="xoxb-test", token_verification_enabled=False)
    for module in LISTENER_MODULES:
        module.register(app)
    return app


def _unwrapped(function):
    return inspect.unwrap(function)


def test_every_listener_that_changes_anything_is_declared_behind_require_admin(app):
    behind = {_unwrapped(listener.ack_function) for listener in app._listeners
              if any(getattr(m, "func", None) is authz.require_admin for m in listener.middleware)}
    assert behind == {_unwrapped(f) for f in CHANGES_STATE | ADMIN_ONLY}


def test_after_require_admin_only_the_refusing_checks_run_before_the_listener(app):
    """Between require_admin and the listener only ``once`` and ``fresh`` may run (they refuse,
    never change anything), in that order."""
    for listener in app._listeners:
        funcs = [getattr(m, "func", None) for m in listener.middleware]
        if authz.require_admin in funcs:
            after = funcs[funcs.index(authz.require_admin) + 1:]
            assert after in ([], [actions.once, actions.fresh]), listener.ack_function


def test_every_click_that_changes_anything_is_processed_once_and_only_while_fresh(app):
    clicks = {_unwrapped(f) for f in CHANGES_STATE} - {_unwrapped(commands.change_admins),
                                                       _unwrapped(commands.revoke_owner)}
    declared = {_unwrapped(listener.ack_function) for listener in app._listeners
                if {actions.once, actions.fresh} <= {getattr(m, "func", None) for m in listener.middleware}}
    assert declared == clicks


def test_no_listener_checks_the_role_itself():
    for module in LISTENER_MODULES:
        assert ".refusal(" not in inspect.getsource(module), module.__name__


def test_listeners_are_module_level_functions(app):
    for listener in app._listeners:
        function = _unwrapped(listener.ack_function)
        assert "<locals>" not in function.__qualname__, function.__qualname__
        assert inspect.getmodule(function) in LISTENER_MODULES


def test_no_listener_module_imports_another():
    names = {m.__name__.rsplit(".", 1)[1] for m in LISTENER_MODULES}
    for module in LISTENER_MODULES:
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imported = {(node.module or "").rsplit(".", 1)[-1]} | {a.name for a in node.names}
                assert not imported & (names - {module.__name__.rsplit(".", 1)[1]}), (module.__name__, ast.dump(node))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.rsplit(".", 1)[-1] not in names, (module.__name__, alias.name)
