"""Database adapters behind one interface, each with its own schema set-up (CONTRACT.md §10).

The service hands adapters values already in their stored form (hashed passwords, sealed
personal fields, lower-cased or blind-indexed keys), so an adapter only stores and finds rows:
parameterized queries only, uniqueness enforced by the database's own unique indexes (a
violation comes back as :class:`~stacklab_python.errors.Conflict` naming the field).

- :mod:`.sql`: SQLite (sqlite3), PostgreSQL (psycopg 3) and MySQL/MariaDB (PyMySQL), one
  adapter with the dialect differences in one place.
- :mod:`.mongo`: MongoDB (pymongo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class StoredUser:
    """A row as the database holds it."""

    id: int
    username: str
    email: str  # plain, or `v1:…` ciphertext
    full_name: str
    password: str  # exactly what the password column holds
    created_at: int
    updated_at: int


@dataclass
class NewUser:
    """A row to insert, every value in its stored form."""

    username: str
    username_key: str  # lower-cased username: the unique, searchable key
    email: str
    email_key: str  # lower-cased email, or its blind index under encryption
    full_name: str
    password: str
    now: int


@dataclass
class Changes:
    """Columns to change; ``None`` leaves a column as it is."""

    now: int
    username: tuple[str, str] | None = None  # (value, key)
    email: tuple[str, str] | None = None  # (value, key)
    full_name: str | None = None
    password: str | None = None


@dataclass
class Search:
    """``lower is None``: everything. Else a case-insensitive substring of the username (and of
    the email where it is stored plain), or an exact blind-index match of the email."""

    lower: str | None = None
    email_index: str | None = None


class UserStore(Protocol):
    engine: str

    def insert(self, user: NewUser) -> int: ...
    def get(self, id_: int) -> StoredUser | None: ...
    def search(self, search: Search, limit: int, offset: int) -> tuple[list[StoredUser], int]: ...
    def update(self, id_: int, changes: Changes) -> StoredUser | None: ...
    def delete(self, id_: int) -> bool: ...
    def stats(self) -> dict: ...
    def close(self) -> None: ...


ENGINE_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MySQL", "mongodb": "MongoDB"}


def connect(spec: dict, max_connections: int) -> UserStore:
    """Opens the store a descriptor's ``database`` names and makes sure its schema exists."""
    engine = spec["engine"]
    if engine in ("sqlite", "postgres", "mysql"):
        from .sql import SqlStore

        return SqlStore(engine, spec["url"], max_connections)
    from .mongo import MongoStore

    return MongoStore(spec["url"], spec.get("database"), max_connections)


def like_pattern(text: str) -> str:
    """Escapes LIKE's wildcards with ``!`` (the same in all three SQL dialects) and wraps in ``%``."""
    out = ["%"]
    for c in text:
        if c in "%_!":
            out.append("!")
        out.append(c)
    out.append("%")
    return "".join(out)


def regex_literal(text: str) -> str:
    """Escapes regular-expression syntax so search text matches literally (MongoDB)."""
    return "".join("\\" + c if c in "\\^$.|?*+()[]{}-/" else c for c in text)
