"""Citizens' phone numbers: validation, encryption at rest, keyed lookup hash, masking (Art. 16(四), 19)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re

import phonenumbers
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class InvalidPhone(ValueError):
    """The text is not a valid mobile or fixed-line number."""


def normalise_phone(raw: str, default_region: str = "CN") -> str:
    """Parse a phone number and return it in E.164 (+8613812341234)."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 32 or not raw.isprintable():
        raise InvalidPhone("phone must be a phone number such as +8613812341234")
    try:
        parsed = phonenumbers.parse(raw.strip(), default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"phone is not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone("phone is not a valid number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """Mask a number for display: +8613812341234 -> 138****1234."""
    digits = e164.lstrip("+")
    national = digits[2:] if digits.startswith("86") else digits
    if len(national) <= 7:
        return national[:2] + "*" * max(len(national) - 4, 1) + national[-2:]
    return national[:3] + "****" + national[-4:]


class PhoneVault:
    """Encrypts numbers with Fernet and hashes them with a key of their own, both derived from the secret."""

    def __init__(self, secret_key: str) -> None:
        master = secret_key.encode("utf-8")
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(master, b"gateway/phone-encryption")))
        self._hash_key = _derive(master, b"gateway/phone-lookup")

    def encrypt(self, e164: str) -> str:
        return self._fernet.encrypt(e164.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise ValueError("phone ciphertext does not match GATEWAY_SECRET_KEY") from None

    def lookup_hash(self, e164: str) -> str:
        """A keyed hash: equal numbers match, and the table alone reveals nothing."""
        return hmac.new(self._hash_key, e164.encode(), hashlib.sha256).hexdigest()


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"haochaping-gateway", info=info).derive(master)


# Anything that looks like a mobile number: +86 optional, 1[3-9] then nine digits.
_PHONE_IN_TEXT = re.compile(r"(?<!\d)(\+?86[- ]?)?(1[3-9]\d)[- ]?(\d{4})[- ]?(\d{4})(?!\d)")
_E164_IN_TEXT = re.compile(r"(?<![\d*])\+\d{7,15}(?!\d)")


def redact(text: str) -> str:
    """Mask every phone-like number in a text (log lines, error messages)."""
    text = _PHONE_IN_TEXT.sub(lambda m: f"{m.group(2)}****{m.group(4)}", text)
    return _E164_IN_TEXT.sub(lambda m: m.group(0)[:4] + "****" + m.group(0)[-4:], text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks phone numbers in the formatted message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            # Tracebacks can quote provider errors that name the number: format and mask them here.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in (
                "msg",
                "name",
                "levelname",
                "pathname",
                "filename",
                "module",
                "funcName",
                "threadName",
                "processName",
                "taskName",
            ):
                setattr(record, key, redact(value))
        return True
