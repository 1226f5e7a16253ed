"""Aggregation domain: the hourly `aggregated_patterns` ranking (PatternAggregationJob).

`core` is plain Python + SQL (no Dagster); `assets`, `checks`, `schedules` and `defs` wire it into
Dagster.
"""
