"""Logging set-up: one line per record with its structured fields, phone numbers always masked."""

from __future__ import annotations

import logging

from gateway.privacy import RedactingFilter

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class FieldsFormatter(logging.Formatter):
    """Appends the record's `extra` fields as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if fields:
            base += " " + " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
        return base


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(FieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
