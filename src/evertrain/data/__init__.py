"""Data: sources, point-in-time training windows, snapshots, schemas."""
