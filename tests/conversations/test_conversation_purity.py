"""conversations/ is pure: no transport, storage or gateway imports, no I/O calls (STYLE 2, 3)."""

import ast
import sys
from pathlib import Path

import conversations

PACKAGE = Path(conversations.__file__).parent
FORBIDDEN = {
    "aiohttp", "aiogram", "twilio", "redis", "sqlalchemy", "sqlmodel", "asyncpg", "aiosqlite",
    "gateway", "requests", "httpx", "urllib", "socket", "ssl", "asyncio", "subprocess", "os",
    "pathlib", "io", "shutil", "sqlite3", "logging",
}
FORBIDDEN_CALLS = {"open", "print", "input", "__import__", "exec", "eval"}


def modules() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 5
    return files


def imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_imports_only_the_standard_library_and_itself():
    stdlib = set(sys.stdlib_module_names)
    for path in modules():
        roots = imported_roots(ast.parse(path.read_text(encoding="utf-8")))
        assert not roots & FORBIDDEN, f"{path.name} imports {sorted(roots & FORBIDDEN)}"
        outside = {r for r in roots if r not in stdlib and r != "conversations"}
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_no_io_calls():
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {node.func.id}()"


def test_the_scan_sees_forbidden_imports():
    tree = ast.parse("import redis.asyncio\nfrom aiogram.types import Message\nfrom .model import Reply\n")
    assert imported_roots(tree) == {"redis", "aiogram"}
