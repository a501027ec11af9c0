"""Data: sources, time windows, snapshots, reading tables, schema inference and validation."""
