"""The warehouse: schema, connections, migrations and bulk writes (no Dagster imports)."""
