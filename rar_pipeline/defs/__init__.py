"""The Dagster layer: thin wrappers that call the plain-Python domain modules."""
