"""Helpers of the browser test (`test_ui.py`): a real hub in its own data folder (`hub`), what the
Definitions declare (`declared`), Dagster's GraphQL API (`graphql`), materializing the lineage
through it (`lineage`) and headless Chromium (`browser`)."""
