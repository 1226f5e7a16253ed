"""queue_assets: the Dagster hub of a fleet of code-analysis instances."""
