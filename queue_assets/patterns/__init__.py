"""Pattern authority (seed 003): the canonical catalogue `hub.patterns` and its query API.

`canonical` (keys and input checks), `models` (the API's typed results) and `catalogue` (SQL calls:
ingest's hook, the rank refresh, reads for the CLI and the asset) are plain Python without Dagster;
`assets` and `defs` wire the catalogue into Dagster. The SQL lives in sql/010_patterns.sql and
sql/011_hub_api.sql; docs/patterns.md explains both.
"""
