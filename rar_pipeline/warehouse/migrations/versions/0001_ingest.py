"""ingest ledger, raw events and rejected rows

Revision ID: 0001_ingest
Revises: 
"""

import sqlalchemy as sa
from alembic import op

revision = '0001_ingest'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rar_batches',
    sa.Column('batch_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('file_name', sa.String(length=512), nullable=False),
    sa.Column('file_format', sa.String(length=16), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False, comment='loaded | rejected | duplicate'),
    sa.Column('reason', sa.String(length=32), nullable=True, comment='whole-file reject reason code'),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('duplicate_of', sa.Integer(), nullable=True),
    sa.Column('rows_read', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('rows_accepted', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('rows_rejected', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('rejected_by_reason', sa.Text(), nullable=True, comment='JSON object reason -> count'),
    sa.Column('unknown_columns', sa.Text(), nullable=True, comment='JSON list of ignored input columns'),
    sa.Column('months', sa.Text(), nullable=True, comment='JSON list of months (YYYY-MM-DD) with accepted rows'),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('archived_as', sa.String(length=1024), nullable=True, comment='where the file was moved after commit'),
    sa.ForeignKeyConstraint(['duplicate_of'], ['rar_batches.batch_id'], ),
    sa.PrimaryKeyConstraint('batch_id')
    )
    with op.batch_alter_table('rar_batches', schema=None) as batch_op:
        batch_op.create_index('ix_rar_batches_sha256', ['sha256'], unique=False)
        batch_op.create_index('uq_rar_batches_loaded_sha256', ['sha256'], unique=True, sqlite_where=sa.text("status = 'loaded'"), postgresql_where=sa.text("status = 'loaded'"))

    op.create_table('rar_raw_events',
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('line_no', sa.BigInteger(), nullable=False, comment='line of the row in its file (header = 1)'),
    sa.Column('dealer_id', sa.String(length=128), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('channel', sa.Text(), nullable=False),
    sa.Column('impressions', sa.BigInteger(), nullable=False),
    sa.Column('share_ai_snippet', sa.Double(), nullable=False),
    sa.Column('ctr_baseline', sa.Double(), nullable=False),
    sa.Column('ctr_drop_when_ai', sa.Double(), nullable=False),
    sa.Column('lead_cr', sa.Double(), nullable=False),
    sa.Column('close_rate', sa.Double(), nullable=False),
    sa.Column('avg_gross', sa.Double(), nullable=False),
    sa.Column('recoverable_share', sa.Double(), nullable=False),
    sa.Column('intent_cluster', sa.Text(), server_default='', nullable=False)
    )
    with op.batch_alter_table('rar_raw_events', schema=None) as batch_op:
        batch_op.create_index('ix_rar_raw_events_batch_id', ['batch_id'], unique=False, postgresql_using='brin')

    op.create_table('rar_rejected_rows',
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('line_no', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False, comment='capped copy of the input row'),
    sa.ForeignKeyConstraint(['batch_id'], ['rar_batches.batch_id'], ),
    sa.PrimaryKeyConstraint('batch_id', 'line_no')
    )
    with op.batch_alter_table('rar_rejected_rows', schema=None) as batch_op:
        batch_op.create_index('ix_rar_rejected_rows_reason', ['reason'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('rar_rejected_rows', schema=None) as batch_op:
        batch_op.drop_index('ix_rar_rejected_rows_reason')

    op.drop_table('rar_rejected_rows')
    with op.batch_alter_table('rar_raw_events', schema=None) as batch_op:
        batch_op.drop_index('ix_rar_raw_events_batch_id', postgresql_using='brin')

    op.drop_table('rar_raw_events')
    with op.batch_alter_table('rar_batches', schema=None) as batch_op:
        batch_op.drop_index('uq_rar_batches_loaded_sha256', sqlite_where=sa.text("status = 'loaded'"), postgresql_where=sa.text("status = 'loaded'"))
        batch_op.drop_index('ix_rar_batches_sha256')

    op.drop_table('rar_batches')
