"""alert outbox

Revision ID: 0003_alerts
Revises: 0002_monthly
"""

import sqlalchemy as sa
from alembic import op

revision = '0003_alerts'
down_revision = '0002_monthly'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rar_alert_outbox',
    sa.Column('alert_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('dedupe_key', sa.String(length=256), nullable=False, comment='kind:dealer:month:level — never alerted twice'),
    sa.Column('kind', sa.String(length=16), nullable=False, comment='pressure | p0'),
    sa.Column('dealer_id', sa.String(length=128), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('level', sa.Double(), nullable=False, comment='pressure level alerted (tenths, at least the threshold)'),
    sa.Column('pressure', sa.Double(), nullable=False),
    sa.Column('rar', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('recoverable', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('trend', sa.String(length=8), nullable=False),
    sa.Column('p0', sa.String(length=8), nullable=False, comment='true | false | unknown'),
    sa.Column('fix_pack', sa.JSON(), nullable=False, comment='[{"intent", "rar", "actions": [...]}], top 3'),
    sa.Column('status', sa.String(length=16), nullable=False, comment='pending | sent | failed | dry_run'),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True, comment='redacted: never holds the webhook URL'),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('alert_id'),
    sa.UniqueConstraint('dedupe_key')
    )
    with op.batch_alter_table('rar_alert_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_rar_alert_outbox_status', ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('rar_alert_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_rar_alert_outbox_status')

    op.drop_table('rar_alert_outbox')
