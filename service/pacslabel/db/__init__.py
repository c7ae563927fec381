"""Database: SQLAlchemy 2 engine and sessions. SQLite by default, PostgreSQL for scale."""

from pacslabel.db.base import Base, utcnow
from pacslabel.db.engine import create_db_engine, make_sessionmaker, session_scope

__all__ = ["Base", "create_db_engine", "make_sessionmaker", "session_scope", "utcnow"]
