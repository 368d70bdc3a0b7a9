"""evaluation_log_append(): a commit's entries appended in one round trip on PostgreSQL

Revision ID: a1f0c3e5b101
Revises: a2f0c3e5b202
Create Date: 2026-12-04 22:30:00
"""

from typing import Sequence, Union

from alembic import op


revision: str = "a1f0c3e5b101"
down_revision: Union[str, None] = "a2f0c3e5b202"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Locks the head row, numbers the records, joins each entry's text around its record's canonical JSON,
# hashes it (sha256 over the previous hash's 32 bytes and the text's UTF-8), inserts the entries and
# moves the head: what gateway.audit.log does on SQLite in several statements. The head row is rebuilt
# from the log's last entry if it is missing (only possible with the triggers switched off).
APPEND = r"""
CREATE FUNCTION evaluation_log_append(kinds text[], ids bigint[], records text[], times timestamptz[])
RETURNS TABLE (head_seq bigint, head_hash text) LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    h text;
    before text;
    entry text;
    i int;
BEGIN
    SELECT seq, hash INTO n, h FROM evaluation_log_head WHERE id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO evaluation_log_head (id, seq, hash)
        SELECT 1, coalesce(max(l.seq), 0),
               coalesce((SELECT l2.hash FROM evaluation_log l2 ORDER BY l2.seq DESC LIMIT 1), repeat('0', 64))
        FROM evaluation_log l
        ON CONFLICT DO NOTHING;
        SELECT seq, hash INTO STRICT n, h FROM evaluation_log_head WHERE id = 1 FOR UPDATE;
    END IF;
    FOR i IN 1 .. coalesce(array_length(kinds, 1), 0) LOOP
        n := n + 1;
        entry := '{"kind":"' || kinds[i] || '","record":' || records[i] || ',"seq":' || n || '}';
        before := h;
        h := encode(sha256(decode(before, 'hex') || convert_to(entry, 'UTF8')), 'hex');
        INSERT INTO evaluation_log (seq, kind, record_id, record, prev_hash, hash, created_at)
        VALUES (n, kinds[i], ids[i], entry, before, h, times[i]);
    END LOOP;
    UPDATE evaluation_log_head SET seq = n, hash = h WHERE id = 1;
    RETURN QUERY SELECT n, h;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS evaluation_log_append(text[], bigint[], text[], timestamptz[])")
