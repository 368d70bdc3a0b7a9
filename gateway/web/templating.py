"""Jinja2 templates, autoescaped: every value a citizen or a department sends is shown as text."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape


@lru_cache(maxsize=1)
def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )


def render(name: str, *, status: int = 200, **context: Any) -> web.Response:
    html = environment().get_template(name).render(**context)
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    # Rating pages are personal: no caching by shared proxies, no referrer leaking the token.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Never inside another site's frame: a page that records a rating with one tap must not be
    # overlaid and clicked through (clickjacking). CSP for current browsers, X-Frame-Options for old ones.
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    response.headers["X-Frame-Options"] = "DENY"
    return response
