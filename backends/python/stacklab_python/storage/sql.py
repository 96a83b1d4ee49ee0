"""SQLite (sqlite3), PostgreSQL (psycopg 3) and MySQL/MariaDB (PyMySQL).

One adapter, three dialects: the differences are the driver, the placeholder (``?`` against
``%s``), the DDL, how an insert returns its id, how a unique violation names its index, and
where the catalog keeps a table's size. Every query is shared, so the engines cannot drift.
The DDL is CONTRACT.md §10 verbatim: a table the Rust runtime made is this table.
"""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.parse

from ..errors import Conflict, StoreUnavailable
from . import ENGINE_NAMES, Changes, NewUser, Search, StoredUser, like_pattern
from .pool import Pool, PoolTimeout

COLUMNS = "id, username, email, full_name, password, created_at, updated_at"

DDL = {
    "sqlite": """CREATE TABLE IF NOT EXISTS users (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    username TEXT NOT NULL, username_key TEXT NOT NULL,
                    email TEXT NOT NULL, email_key TEXT NOT NULL,
                    full_name TEXT NOT NULL DEFAULT '', password TEXT NOT NULL,
                    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
                    CONSTRAINT users_username_key UNIQUE (username_key),
                    CONSTRAINT users_email_key UNIQUE (email_key))""",
    "postgres": """CREATE TABLE IF NOT EXISTS users (
                    id BIGSERIAL PRIMARY KEY,
                    username TEXT NOT NULL, username_key TEXT NOT NULL,
                    email TEXT NOT NULL, email_key TEXT NOT NULL,
                    full_name TEXT NOT NULL DEFAULT '', password TEXT NOT NULL,
                    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
                    CONSTRAINT users_username_key UNIQUE (username_key),
                    CONSTRAINT users_email_key UNIQUE (email_key))""",
    "mysql": """CREATE TABLE IF NOT EXISTS users (
                    id BIGINT AUTO_INCREMENT PRIMARY KEY,
                    username VARCHAR(64) NOT NULL, username_key VARCHAR(64) NOT NULL,
                    email VARCHAR(1024) NOT NULL, email_key VARCHAR(255) NOT NULL,
                    full_name VARCHAR(1024) NOT NULL DEFAULT '', password VARCHAR(1024) NOT NULL,
                    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
                    CONSTRAINT users_username_key UNIQUE (username_key),
                    CONSTRAINT users_email_key UNIQUE (email_key))
                 CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci""",
}

SIZE_SQL = {
    "sqlite": "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
    "postgres": "SELECT pg_total_relation_size('users')",
    "mysql": "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) "
    "FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'users'",
}

CONNECT_TIMEOUT = 5


def _sqlite_factory(url: str):
    rest = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url.removeprefix("sqlite:")
    path, _, query = rest.partition("?")
    params = urllib.parse.parse_qs(query)
    mode = params.get("mode", ["rw"])[-1]
    if mode not in ("ro", "rw", "rwc", "memory"):
        raise StoreUnavailable("cannot connect to SQLite: the URL's mode is not ro, rw, rwc or memory")
    target = f"file:{urllib.parse.quote(path)}?mode={mode}"

    def connect():
        conn = sqlite3.connect(target, uri=True, timeout=5.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    return connect


def _postgres_factory(url: str):
    import psycopg

    def connect():
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)

    return connect


def _mysql_factory(url: str):
    import pymysql

    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("mysql", "mariadb") or not u.hostname:
        raise StoreUnavailable("cannot connect to MySQL: the connection string is not valid")
    kwargs = {
        "host": u.hostname,
        "port": u.port or 3306,
        "user": urllib.parse.unquote(u.username or ""),
        "password": urllib.parse.unquote(u.password or ""),
        "database": urllib.parse.unquote(u.path.lstrip("/")) or None,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": 30,
        "write_timeout": 30,
    }

    def connect():
        return pymysql.connect(**kwargs)

    return connect


_FACTORIES = {"sqlite": _sqlite_factory, "postgres": _postgres_factory, "mysql": _mysql_factory}


def _ping(conn) -> None:
    """A round trip: raises when the server went away while the connection sat idle."""
    if hasattr(conn, "ping"):  # PyMySQL
        conn.ping(reconnect=False)
    else:
        conn.execute("SELECT 1")
_MYSQL_KEY = re.compile(r"for key '([^']*)'")


class SqlStore:
    def __init__(self, engine: str, url: str, max_connections: int):
        self.engine = engine
        self._name = ENGINE_NAMES[engine]
        self._p = "?" if engine == "sqlite" else "%s"
        factory = _FACTORIES[engine](url)
        self._pool = Pool(factory, max_connections, check=None if engine == "sqlite" else _ping)
        try:
            self._init()
        except StoreUnavailable as e:
            self._pool.close()
            raise StoreUnavailable(f"cannot connect to {self._name}: {e}") from None

    def __repr__(self) -> str:
        return f"SqlStore({self.engine})"

    # --- plumbing --------------------------------------------------------------------------

    def _fail(self, what: str, e: BaseException) -> Exception:
        field = self._unique_violation(e)
        if field is not None:
            return Conflict(field)
        if isinstance(e, PoolTimeout):
            return StoreUnavailable(f"{self._name} could not {what}: {e}")
        return StoreUnavailable(f"{self._name} could not {what}: {_describe(e)}")

    def _unique_violation(self, e: BaseException) -> str | None:
        """The field a unique index refused, or None when it is another failure."""
        text = None
        if self.engine == "sqlite":
            if isinstance(e, sqlite3.IntegrityError) and "UNIQUE" in str(e):
                text = str(e)  # "UNIQUE constraint failed: users.email_key"
        elif self.engine == "postgres":
            import psycopg.errors

            if isinstance(e, psycopg.errors.UniqueViolation):
                text = e.diag.constraint_name or ""
        else:
            import pymysql

            if isinstance(e, pymysql.err.IntegrityError) and e.args and e.args[0] == 1062:
                m = _MYSQL_KEY.search(str(e.args[1]) if len(e.args) > 1 else "")
                text = m.group(1) if m else ""
        if text is None:
            return None
        return "email" if "email_key" in text else "username"

    def _run(self, what: str, sql: str, params: tuple = (), fetch: str | None = None):
        """Runs one statement on a pooled connection: fetch None (rowcount), 'one', 'all' or
        'lastrowid'. A unique violation keeps the connection; any other failure drops it."""
        try:
            with self._pool.connection() as conn:
                cur = conn.cursor()
                try:
                    cur.execute(sql, params)
                    if fetch == "one":
                        return cur.fetchone()
                    if fetch == "all":
                        return cur.fetchall()
                    if fetch == "lastrowid":
                        return cur.lastrowid
                    return cur.rowcount
                except Exception as e:  # noqa: BLE001 - sorted below
                    field = self._unique_violation(e)
                    if field is None:
                        raise
                    conflict = Conflict(field)
                finally:
                    cur.close()
        except Exception as e:  # noqa: BLE001 - every driver error becomes a StoreError
            raise self._fail(what, e) from None
        raise conflict

    def _init(self) -> None:
        # Two instances opening a new session's database at once both run this, and
        # PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against a concurrent one (a
        # unique violation in its catalog): tried again, the table then exists.
        for attempt in range(4):
            try:
                self._run("set up the schema", DDL[self.engine])
                return
            except StoreUnavailable:
                if attempt == 3:
                    raise
                time.sleep(0.02 * (attempt + 1))
            except Conflict:
                if attempt == 3:
                    raise StoreUnavailable(f"{self._name} could not set up the schema") from None
                time.sleep(0.02 * (attempt + 1))

    @staticmethod
    def _row(r) -> StoredUser:
        return StoredUser(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), int(r[6]))

    # --- the store -------------------------------------------------------------------------

    def insert(self, u: NewUser) -> int:
        p = self._p
        sql = (
            "INSERT INTO users (username, username_key, email, email_key, full_name, password, "
            f"created_at, updated_at) VALUES ({', '.join([p] * 8)})"
        )
        params = (u.username, u.username_key, u.email, u.email_key, u.full_name, u.password, u.now, u.now)
        if self.engine == "postgres":
            return int(self._run("insert", sql + " RETURNING id", params, "one")[0])
        new_id = self._run("insert", sql, params, "lastrowid")
        if not new_id:
            raise StoreUnavailable(f"{self._name} returned no id for the insert")
        return int(new_id)

    def get(self, id_: int) -> StoredUser | None:
        row = self._run("read", f"SELECT {COLUMNS} FROM users WHERE id = {self._p}", (id_,), "one")
        return None if row is None else self._row(row)

    def search(self, search: Search, limit: int, offset: int) -> tuple[list[StoredUser], int]:
        p = self._p
        if search.lower is None:
            where, binds = "", ()
        elif search.email_index is None:
            pattern = like_pattern(search.lower)
            where = f" WHERE username_key LIKE {p} ESCAPE '!' OR email_key LIKE {p} ESCAPE '!'"
            binds = (pattern, pattern)
        else:
            where = f" WHERE username_key LIKE {p} ESCAPE '!' OR email_key = {p}"
            binds = (like_pattern(search.lower), search.email_index)
        rows = self._run(
            "search", f"SELECT {COLUMNS} FROM users{where} ORDER BY id LIMIT {p} OFFSET {p}",
            binds + (limit, offset), "all",
        )
        total = self._run("count", f"SELECT COUNT(*) FROM users{where}", binds, "one")[0]
        return [self._row(r) for r in rows], int(total)

    def update(self, id_: int, c: Changes) -> StoredUser | None:
        p = self._p
        sets: list[str] = []
        binds: list[object] = []
        for col, value in (
            ("username", c.username and c.username[0]), ("username_key", c.username and c.username[1]),
            ("email", c.email and c.email[0]), ("email_key", c.email and c.email[1]),
            ("full_name", c.full_name), ("password", c.password),
        ):
            if value is not None:
                sets.append(f"{col} = {p}")
                binds.append(value)
        sets.append(f"updated_at = {p}")
        binds += [c.now, id_]
        changed = self._run("update", f"UPDATE users SET {', '.join(sets)} WHERE id = {p}", tuple(binds))
        # MySQL counts only changed rows; tell "missing" from "unchanged" by reading.
        if changed == 0 and self.engine != "mysql":
            return None
        return self.get(id_)

    def delete(self, id_: int) -> bool:
        return self._run("delete", f"DELETE FROM users WHERE id = {self._p}", (id_,)) > 0

    def stats(self) -> dict:
        size = self._run("read its size", SIZE_SQL[self.engine], (), "one")[0]
        rows = self._run("count rows", "SELECT COUNT(*) FROM users", (), "one")[0]
        return {"engine": self.engine, "size_bytes": int(size or 0), "rows": int(rows)}

    def close(self) -> None:
        self._pool.close()


def _describe(e: BaseException) -> str:
    """A driver error as text, one line. Drivers do not put passwords in their messages; a
    connection string is never formatted here."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]
