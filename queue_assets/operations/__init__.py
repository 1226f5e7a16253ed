"""Operations: bootstrap, queue statistics, retention, dead-letter tooling."""
