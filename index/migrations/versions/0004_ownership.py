"""who owns an item, what a person changed, and ids that are never reused

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

- ``owner``: ``upload`` or ``source:<path>`` (see ``index.catalog``). Existing rows whose file is
  an upload (stored as ``<upload folder>/<sha256[:2]>/<sha256>.<ext>``, its own content hash) become
  ``upload``; the others stay NULL until the first job that lists their file adopts them.
- ``source_metadata`` / ``user_metadata``: the metadata so far is taken as the source's (an edit
  made before this revision cannot be told apart from it); ``metadata`` stays their merge.
- ``root``: where the file must resolve to be served (NULL: checked as before roots were kept).
- ``deleted_by``: existing deletes are taken as a person's (``user``): they stay deleted.
- ``revision``: a counter of changes, the service's ETag.
- On SQLite the table is rebuilt with AUTOINCREMENT, so that the id of a removed row is never given
  to another item (PostgreSQL's sequence never reuses one already).
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("items", sa.Column("source_metadata", sa.JSON(), nullable=True))
    op.add_column("items", sa.Column("user_metadata", sa.JSON(), nullable=True))
    op.add_column("items", sa.Column("owner", sa.Text(), nullable=True))
    op.add_column("items", sa.Column("root", sa.Text(), nullable=True))
    op.add_column("items", sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("items", sa.Column("deleted_by", sa.String(16), nullable=True))
    items = sa.table("items", sa.column("metadata", sa.JSON()), sa.column("source_metadata", sa.JSON()),
                     sa.column("user_metadata", sa.JSON()), sa.column("owner", sa.Text()),
                     sa.column("source", sa.Text()), sa.column("content_hash", sa.String()),
                     sa.column("deleted_at", sa.DateTime()), sa.column("deleted_by", sa.String()))
    op.execute(items.update().values(source_metadata=items.c.metadata, user_metadata=sa.literal({}, sa.JSON())))
    prefix = sa.func.substr(items.c.content_hash, 1, 2, type_=sa.String())
    upload_name = sa.literal("%/", sa.String()).concat(prefix).concat("/").concat(items.c.content_hash).concat(".%")
    op.execute(items.update().where(items.c.source.like(upload_name)).values(owner="upload"))
    op.execute(items.update().where(items.c.deleted_at.is_not(None)).values(deleted_by="user"))
    # SQLite: the table is copied into one created with AUTOINCREMENT (ids keep their values; the
    # sequence starts past the largest)
    with op.batch_alter_table("items", recreate="always" if sqlite else "auto",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column("source_metadata", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("user_metadata", existing_type=sa.JSON(), nullable=False)
    op.create_index("ix_items_collection_owner", "items", ["collection", "owner"])


def downgrade() -> None:
    op.drop_index("ix_items_collection_owner", "items")
    with op.batch_alter_table("items") as batch:
        for column in ("deleted_by", "revision", "root", "owner", "user_metadata", "source_metadata"):
            batch.drop_column(column)
