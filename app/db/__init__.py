"""Persistence: SQLAlchemy 2 async models, engine factory and repositories."""
