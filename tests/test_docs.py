"""The documentation a newcomer reads: a README that fits its length and has every section, links
that resolve inside the repository, every setting in `.env.example` and docs/configuration.md with
the default the code uses, the Slack scopes as the manifest asks for them, and `/healthz` documented
as it answers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from bot.config import Settings

from .helpers import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_SECTIONS = ["What a revocation promises", "Quick start: the playground", "The two commands",
                   "Slack setup, step by step", "Production", "Troubleshooting", "Documentation"]
MAX_README_LINES = 250
LINK_RE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
DEFINITION_RE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)  # [name]: target
AUTOLINK_RE = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+)>", re.I)
FENCE_RE = re.compile(r"^\s*(```|~~~).*?^\s*\1", re.M | re.S)
CODE_SPAN_RE = re.compile(r"(`+)(?!`)(?:(?!\n[ \t]*\n).)*?(?<!`)\1(?!`)", re.S)  # within a paragraph
HEADING_RE = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
# Environment variables the code reads that are not settings of apikeys: the operating system's.
NOT_SETTINGS = {"TMPDIR"}


def prose(page: Path) -> str:
    """The page without its code blocks (a URL in an example is not a link)."""
    return FENCE_RE.sub("", page.read_text(encoding="utf-8"))


def text_outside_code(page: Path) -> str:
    """The page without code blocks or code spans (`[--json]` or `<https://…>` in code is no link)."""
    return CODE_SPAN_RE.sub("", prose(page))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to -."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor GitHub makes for the page's headings (a repeated heading gets -1, -2, …)."""
    found, seen = set(), {}
    for heading in HEADING_RE.findall(prose(page)):
        base = slug(heading)
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def targets(page: Path) -> list[str]:
    text = text_outside_code(page)
    return LINK_RE.findall(text) + DEFINITION_RE.findall(text)


def is_local_url(target: str) -> bool:
    parts = urlsplit(target)
    return parts.scheme in ("http", "https") and parts.hostname in LOCAL_HOSTS


def test_the_readme_is_short_and_has_every_section_in_order():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES
    headings = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    assert headings == README_SECTIONS


def test_the_slug_rules_are_githubs():
    assert slug("Quick start: the playground") == "quick-start-the-playground"
    assert slug("`GET /v1/auth` — forward auth for reverse proxies") == "get-v1auth--forward-auth-for-reverse-proxies"
    assert slug("Owners' channels") == "owners-channels"
    assert slug("The server model (2026-12-02)") == "the-server-model-2026-12-02"
    assert slug("`PROMETHEUS_MULTIPROC_DIR`") == "prometheus_multiproc_dir"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(page):
    found = targets(page)
    if page == README:
        assert found  # the parse finds links at all
    for target in found:
        if SCHEME_RE.match(target):
            assert is_local_url(target), f"{page.name} links outside the repository: {target}"
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_relative_to(ROOT.resolve()), f"{page.name}: {target} leaves the repository"
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target}: no such heading in {linked.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_autolink_leaves_the_repository(page):
    for url in AUTOLINK_RE.findall(text_outside_code(page)):
        assert is_local_url(url), f"{page.name} links outside the repository: <{url}>"


def test_no_page_points_outside_the_repository_in_words_either():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert "shared/contract" not in text and "../shared" not in text, page.name


def test_the_readme_links_every_page_of_docs():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## " + README_SECTIONS[-1]):]
    linked = {target.partition("#")[0] for target in LINK_RE.findall(section)}
    assert sorted(f"docs/{page.name}" for page in DOCS if f"docs/{page.name}" not in linked) == []


def test_the_test_command_is_what_ci_runs():
    readme, ci = README.read_text(encoding="utf-8"), (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ("python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest"
            in readme)
    assert "pip install -q -e '.[test]'" in ci and "\n.venv/bin/python -m pytest\n" in ci
    assert "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/python -m bot" in readme


def test_every_test_file_the_docs_name_exists():
    named = set()
    for page in PAGES:
        named |= set(re.findall(r"\b(test_[a-z0-9_]+\.py)\b", page.read_text(encoding="utf-8")))
    assert len(named) > 10
    assert sorted(name for name in named if not (ROOT / "tests" / name).exists()) == []


def test_the_readme_explains_every_bot_scope_the_manifest_asks_for():
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text(encoding="utf-8"))
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    text = README.read_text(encoding="utf-8")
    table = re.search(r"^\s*\| scope \| why.*?\n\s*\n", text, re.M | re.S)
    assert table, "the README's scope table"
    rows = dict(re.findall(r"^\s*\| `([^`]+)` \| (.*?) \|$", table.group(), re.M))
    assert set(rows) == scopes
    assert all(len(why) > 10 for why in rows.values())


def settings_read_by_the_code() -> set[str]:
    """The environment names bot/config.py reads, and any other os.environ / getenv read in bot/ and storage/."""
    source = (ROOT / "bot" / "config.py").read_text(encoding="utf-8")
    names = set(re.findall(r'\bget\("([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'_seconds\(get, "([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'env\.get\("([A-Z][A-Z0-9_]+)"', source))
    assert len(names) >= 20  # the parse found them
    for path in [*(ROOT / "bot").rglob("*.py"), *(ROOT / "storage").rglob("*.py")]:
        code = path.read_text(encoding="utf-8")
        names |= set(re.findall(r'os\.(?:environ\.get|getenv)\(\s*"([A-Z][A-Z0-9_]+)"', code))
        names |= set(re.findall(r'os\.environ\[\s*"([A-Z][A-Z0-9_]+)"\s*\]', code))
    return names


def env_example() -> dict[str, str | None]:
    """Each setting in .env.example: its value, or None when it is only commented out."""
    found: dict[str, str | None] = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]+)=(.*)", line.strip())
        if match:
            name, value = match.group(2), match.group(3)
            if match.group(1) is None:
                found[name] = value
            else:
                found.setdefault(name, None)
    return found


def test_the_code_reads_what_the_docs_expect():
    names = settings_read_by_the_code()
    assert {"DATABASE_URL", "SLACK_BOT_TOKEN", "APIKEYS_AUDIT_SIGNING_KEY", "PROMETHEUS_MULTIPROC_DIR"} <= names


def test_env_example_lists_every_setting():
    assert sorted(settings_read_by_the_code() - NOT_SETTINGS - env_example().keys()) == []


def test_env_example_gives_the_defaults_the_code_uses():
    """Set as written, .env.example configures what no settings at all configure."""
    written = {name: value for name, value in env_example().items() if value is not None}
    assert len(written) >= 10  # the file sets the defaults it can
    defaults, from_example = Settings.from_env({}), Settings.from_env(written)
    assert from_example == defaults


def test_configuration_docs_name_every_setting():
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert sorted(name for name in settings_read_by_the_code() if f"`{name}`" not in text) == []


def test_healthz_is_documented_as_it_answers(database_url):
    from bot.server import create_app
    from storage import open_store

    from .servers import wsgi_request

    open_store(database_url).close()
    app = create_app(Settings(database_url=database_url))
    try:
        status, _, body = wsgi_request(app, "GET", "/healthz")
        head_status, _, _ = wsgi_request(app, "HEAD", "/healthz")
    finally:
        app.store.close()
    assert status == head_status == 200
    answer = json.dumps(json.loads(body))
    assert f"200 `{answer}`" in (ROOT / "docs" / "key-api.md").read_text(encoding="utf-8")
    assert f"200 `{answer}`" in README.read_text(encoding="utf-8")
