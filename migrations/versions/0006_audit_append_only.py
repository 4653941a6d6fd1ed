"""audit_events is append-only on PostgreSQL

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 18:45:00.000000

UPDATE, DELETE and TRUNCATE on ``audit_events`` raise unless the session's user is a direct
member of the role ``pursuit_audit_retention`` (created here, NOLOGIN), which the service's
role must never be granted; a retention purge runs as a separate login role that is
(docs/deploy.md). Superusers are not exempt: membership is checked directly, not through
``pg_has_role``. A superuser or the table's owner can still drop the trigger, so production
runs the service as a role that owns nothing (docs/deploy.md); the trigger stops the
service's own connection and every accident.

SQLite (the embedded, single-user default) is not protected: whoever runs it owns the file.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RETENTION_ROLE = "pursuit_audit_retention"

_CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{RETENTION_ROLE}') THEN
        CREATE ROLE {RETENTION_ROLE} NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object THEN NULL;  -- another database of the cluster made it meanwhile
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'no CREATEROLE: create role {RETENTION_ROLE} (NOLOGIN) by hand to purge';
END
$$;
"""

_FUNCTION = f"""
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT FROM pg_auth_members m
        JOIN pg_roles g ON g.oid = m.roleid
        JOIN pg_roles u ON u.oid = m.member
        WHERE g.rolname = '{RETENTION_ROLE}' AND u.rolname = session_user
    ) THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % refused for role %', TG_OP, session_user
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_CREATE_ROLE)
    op.execute(_FUNCTION)
    op.execute(
        "CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events")
    op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
    # The role is the cluster's, not this database's: it stays.
