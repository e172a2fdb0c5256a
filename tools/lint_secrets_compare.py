"""A lint ruff does not have: secrets are compared in constant time.

``==`` / ``!=`` (and ``in`` against a collection) on a value whose name says it is a digest, a
secret, a token or a signature can leak through timing how much of it matched. Compare them with
``hmac.compare_digest`` (``storage.keyformat.digests_equal``). A comparison that is safe (the value
is public, or it is compared with ``None`` or a literal) says so on its line: ``# timing: <why>``.

Usage: ``python tools/lint_secrets_compare.py [PATH ...]`` (default: ``bot`` and ``storage``);
exit 1 listing each finding, else 0.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

SECRET_NAME = re.compile(r"(digest|secret|token|signature)", re.IGNORECASE)
NOT_SECRET = re.compile(r"(_type|_types|_hash|_id|_ids|_name|_url|_header|_count|_len|kind)$", re.IGNORECASE)


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    return None


def _secretish(node: ast.AST) -> bool:
    name = _name(node)
    return bool(name and SECRET_NAME.search(name) and not NOT_SECRET.search(name))


def _trivial(node: ast.AST) -> bool:
    """None, a literal, or a length: nothing secret is compared byte by byte."""
    return isinstance(node, ast.Constant) or (isinstance(node, ast.Call) and _name(node.func) in {"len", "type"})


def findings(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source, str(path))):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands[:-1], operands[1:], strict=True):
            if not isinstance(op, (ast.Eq, ast.NotEq)):
                continue
            if _trivial(left) or _trivial(right):
                continue
            if _secretish(left) or _secretish(right):
                line = lines[node.lineno - 1]
                if "# timing:" not in line:
                    out.append(f"{path}:{node.lineno}: '{ast.unparse(node)}' compares a secret with "
                               f"{type(op).__name__}: use hmac.compare_digest (or say '# timing: <why>')")
    return out


def main(argv: list[str]) -> int:
    roots = [Path(p) for p in argv] or [Path("bot"), Path("storage")]
    problems = []
    for root in roots:
        for path in sorted(root.rglob("*.py") if root.is_dir() else [root]):
            problems.extend(findings(path))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
