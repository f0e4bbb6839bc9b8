"""Alembic migrations of the store; never edit one that was released."""
