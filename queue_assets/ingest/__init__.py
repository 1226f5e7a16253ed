"""Ingest: drain the consumed pgmq queues into `hub.*` tables, exactly once in effect."""
