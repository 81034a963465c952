"""monthly lineage tables

Revision ID: 0002_monthly
Revises: 0001_ingest
"""

import json
from datetime import date

import sqlalchemy as sa
from alembic import op

revision = '0002_monthly'
down_revision = '0001_ingest'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rar_batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='events', nullable=False, comment='events | dealer_scores'))
    op.create_table('dealer_scores',
    sa.Column('dealer_id', sa.String(length=128), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('aiv', sa.Double(), nullable=False, comment='AI visibility, 0..100'),
    sa.Column('ati', sa.Double(), nullable=False, comment='AI trust, 0..100'),
    sa.Column('qai', sa.Double(), nullable=False, comment='quality index, 0..100'),
    sa.Column('zero_click_coverage', sa.Double(), nullable=True, comment='0..1, when known'),
    sa.Column('schema_coverage', sa.Double(), nullable=True, comment='0..1, when known'),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('dealer_id', 'month')
    )
    op.create_table('rar_events',
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('dealer_id', sa.String(length=128), nullable=False),
    sa.Column('channel', sa.Text(), nullable=False),
    sa.Column('intent_cluster', sa.Text(), nullable=False),
    sa.Column('impressions', sa.BigInteger(), nullable=False),
    sa.Column('share_ai_snippet', sa.Double(), nullable=False),
    sa.Column('ctr_baseline', sa.Double(), nullable=False),
    sa.Column('ctr_drop_when_ai', sa.Double(), nullable=False),
    sa.Column('lead_cr', sa.Double(), nullable=False),
    sa.Column('close_rate', sa.Double(), nullable=False),
    sa.Column('avg_gross', sa.Double(), nullable=False),
    sa.Column('recoverable_share', sa.Double(), nullable=False),
    sa.Column('ai_sessions', sa.Double(), nullable=False),
    sa.Column('lost_sessions', sa.Double(), nullable=False),
    sa.Column('lost_leads', sa.Double(), nullable=False),
    sa.Column('lost_sales', sa.Double(), nullable=False),
    sa.Column('rar', sa.Double(), nullable=False),
    sa.Column('recoverable', sa.Double(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False, comment='the batch this row comes from'),
    sa.Column('line_no', sa.BigInteger(), nullable=False)
    )
    with op.batch_alter_table('rar_events', schema=None) as batch_op:
        batch_op.create_index('ix_rar_events_month', ['month'], unique=False)

    op.create_table('rar_intent_monthly',
    sa.Column('dealer_id', sa.String(length=128), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('intent_cluster', sa.Text(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False, comment="1 = the dealer's biggest losing intent that month"),
    sa.Column('rar', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('recoverable', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('lost_sessions', sa.BigInteger(), nullable=False),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('is_complete', sa.Boolean(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('dealer_id', 'month', 'intent_cluster')
    )
    op.create_table('rar_monthly',
    sa.Column('dealer_id', sa.String(length=128), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('lost_sessions', sa.BigInteger(), nullable=False),
    sa.Column('lost_leads', sa.BigInteger(), nullable=False),
    sa.Column('lost_sales', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('rar', sa.Numeric(precision=14, scale=2), nullable=False, comment='monthly gross profit at risk, USD'),
    sa.Column('recoverable', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('impressions', sa.BigInteger(), nullable=False),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('top_losing_intents', sa.JSON(), nullable=False, comment='[{"intent": name, "rar": cents}], at most 5'),
    sa.Column('recovery_rate', sa.Double(), nullable=True, comment='recoverable / rar; NULL when rar = 0'),
    sa.Column('zero_click_rate', sa.Double(), nullable=True, comment='lost_sessions / impressions; NULL when no impressions'),
    sa.Column('is_complete', sa.Boolean(), nullable=False, comment='false while the month is still running'),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('dealer_id', 'month')
    )
    op.create_table('rar_pressure',
    sa.Column('dealer_id', sa.String(length=128), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('rar', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('pressure', sa.Double(), nullable=False, comment='min(rar / cap, 1)'),
    sa.Column('cap', sa.Double(), nullable=False),
    sa.Column('trend', sa.String(length=8), nullable=False, comment='up | down | stable vs the previous calendar month'),
    sa.Column('trend_pct', sa.Double(), nullable=False),
    sa.Column('previous_rar', sa.Numeric(precision=14, scale=2), nullable=True, comment='RaR of the previous calendar month, when it has data'),
    sa.Column('lost_sessions', sa.BigInteger(), nullable=False),
    sa.Column('zero_click_proxy', sa.Double(), nullable=False, comment='lost_sessions / (lost_sessions + 10,000)'),
    sa.Column('is_complete', sa.Boolean(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('dealer_id', 'month')
    )
    op.create_table('rar_raw_dealer_scores',
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('line_no', sa.BigInteger(), nullable=False),
    sa.Column('dealer_id', sa.String(length=128), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('aiv', sa.Double(), nullable=False, comment='AI visibility, 0..100'),
    sa.Column('ati', sa.Double(), nullable=False, comment='AI trust, 0..100'),
    sa.Column('qai', sa.Double(), nullable=False, comment='quality index, 0..100'),
    sa.Column('zero_click_coverage', sa.Double(), nullable=True, comment='0..1, when known'),
    sa.Column('schema_coverage', sa.Double(), nullable=True, comment='0..1, when known'),
    sa.PrimaryKeyConstraint('batch_id', 'line_no')
    )
    op.create_table('rar_score_adjustments',
    sa.Column('dealer_id', sa.String(length=128), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('scores_month', sa.Date(), nullable=False, comment='month of the score snapshot used'),
    sa.Column('pressure', sa.Double(), nullable=False),
    sa.Column('trend', sa.String(length=8), nullable=False),
    sa.Column('aiv', sa.Double(), nullable=False),
    sa.Column('ati', sa.Double(), nullable=False),
    sa.Column('qai', sa.Double(), nullable=False),
    sa.Column('aiv_adjusted', sa.Double(), nullable=False),
    sa.Column('ati_adjusted', sa.Double(), nullable=False),
    sa.Column('qai_adjusted', sa.Double(), nullable=False),
    sa.Column('aiv_delta', sa.Double(), nullable=False, comment='adjusted - base, points'),
    sa.Column('ati_delta', sa.Double(), nullable=False, comment='adjusted - base, points'),
    sa.Column('qai_delta', sa.Double(), nullable=False, comment='adjusted - base, points'),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('dealer_id', 'month')
    )
    op.create_table('secondary_metrics',
    sa.Column('dealer_id', sa.String(length=128), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value_num', sa.Double(), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('dealer_id', 'key')
    )
    op.create_table('rar_batch_months',
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False, comment='events | dealer_scores'),
    sa.ForeignKeyConstraint(['batch_id'], ['rar_batches.batch_id'], ),
    sa.PrimaryKeyConstraint('batch_id', 'month')
    )
    with op.batch_alter_table('rar_batch_months', schema=None) as batch_op:
        batch_op.create_index('ix_rar_batch_months_month', ['month'], unique=False)

    # Batches loaded before this revision: their months come from the ledger's JSON list.
    bind = op.get_bind()
    loaded = bind.execute(sa.text("SELECT batch_id, months FROM rar_batches WHERE status = 'loaded'")).all()
    rows = [
        {"batch_id": batch_id, "month": date.fromisoformat(month), "kind": "events"}
        for batch_id, months in loaded
        for month in json.loads(months or "[]")
    ]
    if rows:
        op.bulk_insert(sa.table("rar_batch_months", sa.column("batch_id"), sa.column("month", sa.Date), sa.column("kind")), rows)



def downgrade() -> None:
    with op.batch_alter_table('rar_batches', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('rar_batch_months', schema=None) as batch_op:
        batch_op.drop_index('ix_rar_batch_months_month')

    op.drop_table('rar_batch_months')
    op.drop_table('secondary_metrics')
    op.drop_table('rar_score_adjustments')
    op.drop_table('rar_raw_dealer_scores')
    op.drop_table('rar_pressure')
    op.drop_table('rar_monthly')
    op.drop_table('rar_intent_monthly')
    with op.batch_alter_table('rar_events', schema=None) as batch_op:
        batch_op.drop_index('ix_rar_events_month')

    op.drop_table('rar_events')
    op.drop_table('dealer_scores')
