"""vectors kept beside their items, and deletes as tombstones

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

A vector row is written in the same transaction as its item, so a build killed at
any moment leaves complete (item, vector) pairs behind and the next run resumes
from them. ``content_hash`` says which content the vector was computed from: a
changed file gets a new vector. ``items.deleted_at`` hides an item at once; the next
published version leaves its vector out.
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "vectors",
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vectors")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("deleted_at")
