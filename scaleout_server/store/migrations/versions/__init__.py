"""Statestore revisions, oldest first by number; each one must keep the data already stored."""
