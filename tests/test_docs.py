"""The documentation a newcomer reads: a README that fits its length and has every section, links
that resolve inside the repository, every setting in `.env.example` and docs/configuration.md with
the default the code uses, and `/healthz` documented as it answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bot.config import Settings

from .helpers import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_SECTIONS = ["What a revocation promises", "Quick start: the playground", "The two commands",
                   "Slack setup, step by step", "Production", "Troubleshooting", "Reference"]
LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE_RE = re.compile(r"^```.*?^```", re.M | re.S)
LOCAL_HOSTS = ("http://localhost", "http://127.0.0.1", "https://localhost")


def prose(page: Path) -> str:
    """The page without its code blocks (a URL in an example is not a link)."""
    return FENCE_RE.sub("", page.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to -."""
    text = re.sub(r"[`*_]", lambda m: "_" if m.group() == "_" else "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in prose(page).splitlines():
        if line.startswith("#"):
            base = slug(line.lstrip("#"))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return found


def test_the_readme_is_short_and_has_every_section():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    headings = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    assert headings == README_SECTIONS


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(page):
    for target in LINK_RE.findall(prose(page)):
        assert not target.startswith(("http://", "https://", "mailto:")) or target.startswith(LOCAL_HOSTS), \
            f"{page.name} links outside the repository: {target}"
        if target.startswith(LOCAL_HOSTS):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_relative_to(ROOT.resolve()), f"{page.name}: {target} leaves the repository"
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target}: no such heading"


def test_no_page_points_outside_the_repository_in_words_either():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert "shared/contract" not in text and "../shared" not in text, page.name


def settings_read_by_the_code() -> set[str]:
    source = (ROOT / "bot" / "config.py").read_text(encoding="utf-8")
    names = set(re.findall(r'get\("([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'_seconds\(get, "([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'env\.get\("([A-Z][A-Z0-9_]+)"', source))
    names |= {"PROMETHEUS_MULTIPROC_DIR"}  # bot/metrics.py reads it (prometheus-client's own variable)
    assert len(names) >= 20  # the parse found them
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


def test_env_example_lists_every_setting():
    assert sorted(settings_read_by_the_code() - env_example().keys()) == []


def test_env_example_gives_the_defaults_the_code_uses():
    """Set as written, .env.example configures what no settings at all configure."""
    written = {name: value for name, value in env_example().items() if value is not None}
    assert written  # the file sets the defaults it can
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
    documented = (ROOT / "docs" / "key-api.md").read_text(encoding="utf-8")
    assert f"200 `{json.dumps(json.loads(body))}`" in documented
    assert f"`{json.dumps(json.loads(body))}`" in README.read_text(encoding="utf-8")
