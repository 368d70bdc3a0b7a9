"""The domain packages import no transport and no app (STYLE 2). Their edges are `views.py` (HTTP) and
`cli.py` (the command line): they may; no other module of the package may import them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway

ROOT = Path(gateway.__file__).parent
DOMAIN_PACKAGES = ("evaluations", "tickets", "callbacks", "stats", "fraud", "upload", "audit")
FORBIDDEN_ROOTS = {"aiohttp", "aiogram", "twilio"}
FORBIDDEN_MODULES = (
    "gateway.web",
    "gateway.sms",
    "gateway.bot",
    "gateway.province",
    "gateway.console",
    "gateway.app",
    "gateway.wiring",
    "gateway.__main__",
)
EDGE_MODULES = ("views.py", "cli.py")


def imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Every module a file imports, at the top or inside a function, relative imports resolved."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def violations(modules: set[str]) -> list[str]:
    bad = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN_ROOTS)
    bad += sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_MODULES))
    # A package's edges are not a way round the rule: `from gateway.stats.views import …` is refused too.
    edges = {f".{name.removesuffix('.py')}" for name in EDGE_MODULES}
    bad += sorted(m for m in modules if m.startswith("gateway.") and any(m.endswith(e) or e + "." in m for e in edges))
    return bad


def domain_modules() -> list[Path]:
    files = [p for name in DOMAIN_PACKAGES for p in sorted((ROOT / name).rglob("*.py")) if p.name not in EDGE_MODULES]
    assert len(files) >= 40
    return files


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_modules_import_no_transport_and_no_app(path: Path) -> None:
    package = "gateway." + ".".join(path.relative_to(ROOT).parent.parts)
    bad = violations(imported_modules(ast.parse(path.read_text(encoding="utf-8")), package))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_scan_sees_forbidden_imports() -> None:
    source = (
        "import aiohttp\nfrom aiogram.types import Message\nfrom gateway import app\n"
        "def f():\n    from gateway.web.keys import STORE\n    from ..sms import webhooks\n"
        "from gateway.messaging.outbox import enqueue\nfrom gateway.stats.views import routes\n"
        "from gateway.province.client import ProvinceClient\nimport gateway.upload.cli\n"
    )
    found = violations(imported_modules(ast.parse(source), "gateway.tickets"))
    assert found == ["aiogram.types", "aiogram.types.Message", "aiohttp", "gateway.app",
                     "gateway.province.client", "gateway.province.client.ProvinceClient", "gateway.sms",
                     "gateway.sms.webhooks", "gateway.web.keys", "gateway.web.keys.STORE",
                     "gateway.stats.views", "gateway.stats.views.routes", "gateway.upload.cli"]
