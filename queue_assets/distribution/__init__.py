"""Distribution domain: the hub's knowledge flowing back to the instances and into Git.

- `patterns`: `pattern_distribution` (PatternSyncWorker) — the ranking committed to the
  `templates_data` repository when it changed, and fanned out as `aggregated_patterns`;
- `templates`: `template_updates` (TemplateDistributionWorker) — what changed in the repository
  since the last distributed commit, fanned out as `templates_updated` and sent to the
  `template_updates` queue;
- `assets`, `schedules`, `defs`: the Dagster layer.

Git goes through `queue_assets.git.repo` work copies (`queue_assets.git`); fan-out through `queue_assets.fanout`.
"""
