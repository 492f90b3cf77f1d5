"""Alembic migrations of the records database, shipped inside the package and run by
:mod:`fediguard.records.migrate` (no alembic.ini): ``env.py``, the revision template and ``versions/``."""
