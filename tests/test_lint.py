"""The lints beside ruff that CI runs (``.ci/run``): each finds what it is for, and the code has none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT

LINT = ROOT / "tools" / "lint_secrets_compare.py"


def _lint(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LINT), *map(str, paths)], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("line", [
    "if key.digest == wanted:\n    pass\n",
    "ok = stored_secret != presented\n",
    "same = row['signature'] == signature\n",
    "if token != self.bot_token:\n    pass\n",
])
def test_the_secrets_lint_finds_an_equality_on_a_secret(tmp_path, line):
    source = tmp_path / "bad.py"
    source.write_text(line)
    result = _lint(source)
    assert result.returncode == 1 and "compare_digest" in result.stdout, result.stdout


@pytest.mark.parametrize("line", [
    "import hmac\nok = hmac.compare_digest(key.digest, wanted)\n",
    "missing = key.digest is None\n",
    "if token == '':\n    pass\n",
    "same = row.token_hash == other  # not a secret: a public hash\n",
    "hit = key.digest == wanted  # timing: an index lookup, then digests_equal\n",
])
def test_the_secrets_lint_lets_constant_time_and_said_safe_comparisons_pass(tmp_path, line):
    source = tmp_path / "good.py"
    source.write_text(line)
    assert _lint(source).returncode == 0


def test_the_code_compares_no_secret_with_equality():
    result = _lint()
    assert result.returncode == 0, result.stdout


def test_the_import_contracts_hold():
    """import-linter's contracts (pyproject.toml): storage knows no bot, the production server never
    imports the playground, the Slack app and the key API are independent, no cycles."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
