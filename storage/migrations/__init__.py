"""Alembic migrations for the key store (applied by ``apikeys db upgrade`` and at server start)."""
