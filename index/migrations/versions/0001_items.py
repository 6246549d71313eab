"""items: one row per indexed image

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("collection", sa.String(200), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("collection", "source", name="uq_items_collection_source"),
    )
    op.create_index("ix_items_collection", "items", ["collection"])
    op.create_index("ix_items_content_hash", "items", ["content_hash"])


def downgrade() -> None:
    op.drop_index("ix_items_content_hash", "items")
    op.drop_index("ix_items_collection", "items")
    op.drop_table("items")
