"""Alembic environment and revision scripts of the statestore (see store/migration.py)."""
