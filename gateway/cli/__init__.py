"""The command line's groups beyond the daily acts: configuration, operations, the schema."""
