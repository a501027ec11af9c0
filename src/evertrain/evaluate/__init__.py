"""Evaluation: metrics, the paired bootstrap, and gates as data evaluated into evidence."""
