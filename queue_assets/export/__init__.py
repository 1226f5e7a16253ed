"""The learned-pattern export (KnowledgeExportWorker): the fleet's learned artifacts, combined in
PostgreSQL, proposed daily to the templates repository as one branch (and one pull request) per cycle.

Pure modules (no Dagster): `settings` (thresholds, validated), `learning` (SQL push-down aggregation,
check evaluations), `render` (safe file names, file contents, the markdown summary), `github` (the
pull-request provider over GitHub's REST API), `core` (one export cycle, end to end).
Dagster layer: `resources`, `assets`, `checks`, `schedules`, `defs`.
"""
