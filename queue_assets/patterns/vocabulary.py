"""The pattern kinds and catalogue statuses: plain tuples with no imports.

Kept apart from `contracts` (pydantic) and `canonical` so the CLI can offer them as choices in
`queue-assets --help` without loading pydantic.
"""

PATTERN_TYPES: tuple[str, ...] = ("framework", "technology", "microservice", "code")
STATUSES: tuple[str, ...] = ("observed", "enriching", "enriched", "approved", "rejected", "enrichment_failed")
