"""Git for distribution and export: work copies, the GitHub client and their Dagster resources.

- `repo`: locked work copies of a remote (GitPython, no Dagster), credentials kept out of command
  lines and `.git/config`, the embedded `templates_data` remote;
- `github`: the pull-request provider (GitHub's REST API);
- `resources`: the Dagster resources on top (`TemplatesRepoResource`, `GitHubResource`).

Pattern and template distribution and the learned-pattern export all use them; nothing here
imports `queue_assets.export` or `queue_assets.distribution`.
"""
