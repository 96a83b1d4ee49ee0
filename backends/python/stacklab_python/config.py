"""The runtime's settings (the ``[backend]`` section, CONTRACT.md §2) and the input rules they set.

Every length limit is here, named, so the answer to a too-long value can say which limit it hit.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import unicodedata
from dataclasses import dataclass, field, replace

from .errors import ApiError

DEFAULT_BCRYPT_COST = 10


@dataclass(frozen=True)
class Limits:
    min_username: int = 3
    max_username: int = 32
    max_email: int = 254
    min_password: int = 8
    # bcrypt reads 72 bytes at most; longer passwords are refused rather than cut silently.
    max_password: int = 72
    max_full_name: int = 100
    max_page: int = 100
    max_body_bytes: int = 64 * 1024
    bcrypt_cost: int = DEFAULT_BCRYPT_COST
    max_benchmark_ops: int = 2000
    graphql_max_depth: int = 6
    graphql_max_complexity: int = 200
    graphql_max_fields: int = 500
    # Bounds of guard.py (CONTRACT.md §9a): hashing fields per GraphQL document, hashes at once
    # per instance and how long one waits for a turn, benchmarks at once per instance.
    graphql_max_hashes: int = 10
    max_concurrent_hashes: int = field(default_factory=lambda: 2 * (os.cpu_count() or 1))
    hash_wait_ms: int = 1000
    max_concurrent_benchmarks: int = 2

    def username(self, v: str) -> str:
        v = v.strip()
        if not self.min_username <= len(v) <= self.max_username:
            raise ApiError.invalid(
                "username", f"a username is {self.min_username} to {self.max_username} characters"
            )
        if not all(c.isascii() and (c.isalnum() or c in "_.-") for c in v):
            raise ApiError.invalid("username", "use letters, digits, `_`, `.` or `-` in a username")
        return v

    def email(self, v: str) -> str:
        v = v.strip()
        if not v or len(v) > self.max_email:
            raise ApiError.invalid("email", f"an email address is 3 to {self.max_email} characters")
        bad = ApiError.invalid("email", "give an email address like name@example.com")
        local, at, domain = v.rpartition("@")
        if not at:
            raise bad
        domain_ok = (
            "." in domain
            and not domain.startswith(".")
            and not domain.endswith(".")
            and all(c.isalnum() or c in ".-" for c in domain)
        )
        if not local or "@" in local or not domain_ok or any(_space_or_control(c) for c in v):
            raise bad
        return v

    def password(self, v: str) -> None:
        if len(v) < self.min_password or len(v.encode()) > self.max_password:
            raise ApiError.invalid(
                "password",
                f"a password is {self.min_password} characters to {self.max_password} bytes",
            )
        # PostgreSQL text cannot hold NUL and bcrypt stops reading at one: refused everywhere.
        if "\0" in v:
            raise ApiError.invalid("password", "a password cannot contain the NUL character")

    def full_name(self, v: str) -> str:
        v = v.strip()
        if len(v) > self.max_full_name or any(unicodedata.category(c) == "Cc" for c in v):
            raise ApiError.invalid(
                "full_name",
                f"a full name is at most {self.max_full_name} characters, without control characters",
            )
        return v


def _space_or_control(c: str) -> bool:
    return c.isspace() or unicodedata.category(c) == "Cc"


@dataclass(frozen=True)
class BackendConfig:
    limits: Limits = field(default_factory=Limits)
    # Sessions whose connections are kept open at once; the least recently used is closed past it.
    max_sessions: int = 256
    # A session idle this long has its connections closed (they reopen on its next request).
    session_idle_s: float = 300.0
    db_connections_per_session: int = 4
    # How long a fetched stack descriptor is trusted before it is fetched again.
    descriptor_ttl_s: float = 30.0


@dataclass(frozen=True)
class ServeConfig:
    addr: tuple[str, int] = ("127.0.0.1", 0)
    control_url: str = "http://127.0.0.1:9000"
    backend: BackendConfig = field(default_factory=BackendConfig)


class ConfigError(Exception):
    """Every problem of a config file, each with its key."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))
        self.problems = problems


_INT_KEYS = {
    "max_sessions", "session_idle_ms", "db_connections_per_session", "descriptor_ttl_ms",
    "bcrypt_cost", "max_body_bytes", "graphql_max_depth", "graphql_max_complexity",
    "graphql_max_fields", "graphql_max_hashes", "max_concurrent_hashes", "hash_wait_ms",
    "max_concurrent_benchmarks",
}
_STR_KEYS = {"addr", "control_url"}


def parse_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(text)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ipaddress.ip_address(host)
    return host, int(port)


def load(path: str | None) -> ServeConfig:
    """Reads the ``[backend]`` section of a stacklab config file (the rest is not ours)."""
    if path is None:
        return from_section(None)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError([("config", f"cannot read {path}: {e.strerror}")]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([("config", f"{path} is not valid TOML: {e}")]) from None
    return from_section(doc.get("backend"))


def from_section(section: object) -> ServeConfig:
    """Validates the section; every problem is reported with its key, as the Rust runtime does."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError([("backend", "must be a table")])
    problems: list[tuple[str, str]] = []
    for key, value in section.items():
        if key in _INT_KEYS:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append((f"backend.{key}", "must be a non-negative whole number"))
        elif key in _STR_KEYS:
            if not isinstance(value, str):
                problems.append((f"backend.{key}", "must be a string"))
        else:
            problems.append(("backend", f"unknown field `{key}`"))
    if problems:
        raise ConfigError(problems)
    get = section.get
    addr_text = get("addr", "127.0.0.1:0")
    try:
        addr = parse_addr(addr_text)
    except ValueError:
        problems.append(("backend.addr", f"`{addr_text}` is not `host:port`"))
        addr = ("127.0.0.1", 0)
    control_url = get("control_url", "http://127.0.0.1:9000")
    if not control_url.startswith("http://"):
        problems.append(("backend.control_url", "must be an http:// URL of control's admin address"))
    d = Limits()
    bcrypt_cost = get("bcrypt_cost", d.bcrypt_cost)
    if not 4 <= bcrypt_cost <= 16:
        problems.append(("backend.bcrypt_cost", "must be between 4 and 16"))

    def positive(key: str, default: int) -> int:
        v = get(key, default)
        if v == 0:
            problems.append((f"backend.{key}", "must be at least 1"))
            return default
        return v

    depth = positive("graphql_max_depth", d.graphql_max_depth)
    complexity = positive("graphql_max_complexity", d.graphql_max_complexity)
    fields = positive("graphql_max_fields", d.graphql_max_fields)
    hashes = positive("graphql_max_hashes", d.graphql_max_hashes)
    concurrent_hashes = positive("max_concurrent_hashes", d.max_concurrent_hashes)
    benchmarks = positive("max_concurrent_benchmarks", d.max_concurrent_benchmarks)
    if problems:
        raise ConfigError(problems)
    b = BackendConfig()
    limits = replace(
        d,
        bcrypt_cost=bcrypt_cost,
        max_body_bytes=get("max_body_bytes", d.max_body_bytes),
        graphql_max_depth=depth,
        graphql_max_complexity=complexity,
        graphql_max_fields=fields,
        graphql_max_hashes=hashes,
        max_concurrent_hashes=concurrent_hashes,
        hash_wait_ms=get("hash_wait_ms", d.hash_wait_ms),
        max_concurrent_benchmarks=benchmarks,
    )
    return ServeConfig(
        addr=addr,
        control_url=control_url,
        backend=BackendConfig(
            limits=limits,
            max_sessions=max(1, get("max_sessions", b.max_sessions)),
            session_idle_s=get("session_idle_ms", int(b.session_idle_s * 1000)) / 1000,
            db_connections_per_session=max(1, get("db_connections_per_session", b.db_connections_per_session)),
            descriptor_ttl_s=get("descriptor_ttl_ms", int(b.descriptor_ttl_s * 1000)) / 1000,
        ),
    )
