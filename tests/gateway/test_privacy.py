"""Citizens' phone numbers: normalised, encrypted, hashed with a key, masked, never whole in logs."""

from __future__ import annotations

import io
import logging

import pytest

from gateway.logs import configure
from gateway.privacy import InvalidPhone, PhoneVault, RedactingFilter, mask_phone, normalise_phone, redact
from gateway.web.keys import DISPATCHER
from tests.gateway.evaluations.helpers import report


@pytest.mark.parametrize("raw", ["13812341234", "+86 138 1234 1234", "0086-138-1234-1234", "(+86)13812341234", "１３８１２３４１２３４"])
def test_numbers_are_normalised_to_e164(raw):
    assert normalise_phone(raw) == "+8613812341234"


@pytest.mark.parametrize("raw", ["", "12345", "abc", "+86 000", "1" * 40, "13812341234\x00"])
def test_invalid_numbers_are_refused(raw):
    with pytest.raises(InvalidPhone):
        normalise_phone(raw)


def test_masking():
    assert mask_phone("+8613812341234") == "138****1234"
    assert mask_phone("+12025550123").count("*") == 4


def test_vault_round_trip_and_keyed_hash():
    vault = PhoneVault("secret-one-secret-one")
    token = vault.encrypt("+8613812341234")
    assert "13812341234" not in token and vault.decrypt(token) == "+8613812341234"
    assert vault.encrypt("+8613812341234") != token  # Fernet is randomised
    assert vault.lookup_hash("+8613812341234") == PhoneVault("secret-one-secret-one").lookup_hash("+8613812341234")
    assert vault.lookup_hash("+8613812341234") != PhoneVault("another-secret-key").lookup_hash("+8613812341234")
    with pytest.raises(ValueError, match="GATEWAY_SECRET_KEY"):
        PhoneVault("another-secret-key").decrypt(token)


def test_redact_masks_every_form():
    text = redact("from +8613812341234, 13812341234 and 138-1234-1234; order 20260304123456789")
    assert "13812341234" not in text and "+8613812341234" not in text and "1234-1234" not in text
    assert text.count("138****1234") == 3
    assert "20260304123456789" in text  # long non-phone numbers are left alone


def test_filter_masks_arguments_and_extra_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.privacy")
    logger.addHandler(handler)
    try:
        logger.warning("sending to %s", "+8613812341234", extra={"to": "13812341234"})
    finally:
        logger.removeHandler(handler)
    assert "13812341234" not in stream.getvalue()
    assert "138****1234" in stream.getvalue()


async def test_no_full_number_in_logs_through_a_whole_flow(client, world, caplog):
    # Our own loggers never write a number (checked unfiltered); the configured handler masks what
    # libraries write at DEBUG (SQL parameters, for instance), including numbers citizens type themselves.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG, logger="gateway")
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        body = await report(client, world)
        await client.app[DISPATCHER].run_once()
        token = body["invitation"]["token"]
        await client.post(f"/r/{token}", json={"level": 1, "reasons": [115], "text": "请回电13812341234"})
        await client.app[DISPATCHER].run_once()
        listing = await (await client.get("/api/v1/evaluations", headers=world.auth("operator"))).text()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    gateway_records = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records if r.name.startswith("gateway"))
    assert "138****1234" in gateway_records  # the console provider did log the send, masked
    for whole in ("13812341234", "+8613812341234"):
        assert whole not in gateway_records
        assert whole not in stream.getvalue()
        assert whole not in str(body)
    # A number a citizen typed into their own words is stored as written but masked in department views.
    assert "13812341234" not in listing and "138****1234" in listing


def test_configured_logging_masks_numbers(capsys):
    configure("INFO")
    try:
        logging.getLogger("tests.privacy").info("citizen %s wrote", "13812341234")
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "138****1234" in err and "13812341234" not in err
