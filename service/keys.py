"""API keys: created and revoked on the command line, stored hashed, checked per request, rate-limited.

    python -m service keys create --name NAME --scope read [--scope write] [--rate-limit 600] [--index DIR]
    python -m service keys list [--index DIR]
    python -m service keys revoke (--id N | --name NAME) [--index DIR]

A key is ``lk_`` + 43 random URL-safe characters, shown once at creation; the catalog
database keeps its sha256 (a key has 256 bits of entropy, so a fast hash is the right
one — slow password hashes are for guessable secrets). Clients send it as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

Scopes: ``read`` (search, classify, items), ``write`` (change or delete items), ``admin``
(everything). Writes always need a key; reads need one when ``require_key_for_reads`` is
set. A key that is sent is always checked, even where none is needed. Each key has a
token bucket of ``rate_limit`` requests per minute (the server default when unset);
callers without a key share one bucket per client address
(``anonymous_rate_limit_per_minute``); past either, 429 with ``Retry-After``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import secrets
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from index.catalog import ApiKey, Catalog
from service.errors import ApiError
from service.schemas import ErrorResponse

SCOPES = ("read", "write", "admin")
KEY_PREFIX = "lk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    key_id: int | None  # None: anonymous
    name: str
    scopes: frozenset[str]
    rate_limit: int | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


ANONYMOUS = Caller(None, "anonymous", frozenset(), None)


# -- the store -------------------------------------------------------------------------------
def create_key(catalog: Catalog, name: str, scopes: list[str], rate_limit: int | None = None) -> tuple[str, ApiKey]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    if rate_limit is not None and rate_limit < 1:
        raise ValueError("--rate-limit is requests per minute, at least 1")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=hash_key(key), prefix=key[:10], scopes=",".join(sorted(set(scopes))),
                 rate_limit=rate_limit)
    with catalog.sessions.begin() as session:
        session.add(row)
    return key, row


def list_keys(catalog: Catalog) -> list[ApiKey]:
    with catalog.sessions() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_keys(catalog: Catalog, key_id: int | None = None, name: str | None = None) -> list[ApiKey]:
    with catalog.sessions.begin() as session:
        q = select(ApiKey).where(ApiKey.revoked_at.is_(None))
        q = q.where(ApiKey.id == key_id) if key_id is not None else q.where(ApiKey.name == name)
        rows = list(session.scalars(q))
        for row in rows:
            row.revoked_at = dt.datetime.now(dt.UTC)
        return rows


def lookup(catalog: Catalog, key: str) -> Caller | None:
    """The live key's caller, or None for an unknown or revoked key."""
    with catalog.sessions() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)))
    if row is None:
        return None
    return Caller(row.id, row.name, frozenset(row.scopes.split(",")), row.rate_limit)


# -- per-request checks -----------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per caller (a key id, or ``("address", host)`` for anonymous callers):
    ``per_minute`` requests a minute, bursts up to the same number.

    A bucket left alone for a minute is full again, the same as no bucket: such buckets are
    dropped once there are more than ``max_buckets``, so many addresses cost bounded memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = 10_000) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # caller -> (tokens, last refill time)
        self._lock = threading.Lock()

    def take(self, caller: Hashable, per_minute: int) -> float:
        """0.0 when the request may go ahead, else the seconds until a token is free."""
        now = self.clock()
        rate = per_minute / 60.0
        with self._lock:
            if len(self._buckets) >= self.max_buckets:
                self._buckets = {c: b for c, b in self._buckets.items() if now - b[1] < 60.0}
            tokens, last = self._buckets.get(caller, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[caller] = (tokens - 1.0, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (1.0 - tokens) / rate


# How a key is presented (FastAPI also writes them into the OpenAPI document as security schemes).
BEARER = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer lk_...`")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key, the other way to send it")


def require(scope: str):
    """A dependency that admits callers allowed ``scope`` (see the module doc) and returns the Caller."""

    async def check(request: Request,
                    bearer: HTTPAuthorizationCredentials | None = Security(BEARER, scopes=[scope]),
                    header: str | None = Security(API_KEY_HEADER, scopes=[scope])) -> Caller:
        settings = request.app.state.settings
        resources = getattr(request.app.state, "resources", None)
        key = (bearer.credentials.strip() if bearer else None) or header or None
        needed = scope != "read" or settings.require_key_for_reads
        if key is None:
            if needed:
                raise ApiError(401, "unauthorized", f"this needs an API key with the {scope!r} scope "
                               "(Authorization: Bearer KEY)", headers={"WWW-Authenticate": "Bearer"})
            per_minute = settings.anonymous_rate_limit_per_minute
            address = request.client.host if request.client else "unknown"
            if per_minute and (wait := request.app.state.rate_limiter.take(("address", address), per_minute)) > 0:
                raise ApiError(429, "too_many_requests", f"anonymous requests from {address} are over the limit of "
                               f"{per_minute} a minute; retry in {wait:.1f} s (or send an API key)",
                               headers={"Retry-After": str(max(1, round(wait)))})
            return ANONYMOUS
        if resources is None:
            raise ApiError(503, "unavailable", "the service is not ready")
        caller = await run_in_threadpool(lookup, resources.catalog, key)
        if caller is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        if not caller.allows(scope):
            raise ApiError(403, "forbidden", f"key {caller.name!r} lacks the {scope!r} scope "
                           f"(it has {', '.join(sorted(caller.scopes))})")
        wait = request.app.state.rate_limiter.take(caller.key_id, caller.rate_limit or settings.rate_limit_per_minute)
        if wait > 0:
            raise ApiError(429, "too_many_requests", f"key {caller.name!r} is over its rate limit; retry in "
                           f"{wait:.1f} s", headers={"Retry-After": str(max(1, round(wait)))})
        return caller

    return check


AUTH_ERRORS = {
    401: {"model": ErrorResponse, "description": "`unauthorized`: a key is needed, or the key is unknown/revoked"},
    403: {"model": ErrorResponse, "description": "`forbidden`: the key lacks the scope"},
    429: {"model": ErrorResponse, "description": "`too_many_requests`: over the key's rate limit, or the "
                                                 "per-address limit without a key (see Retry-After)"},
}

ReadCaller = Annotated[Caller, Depends(require("read"))]
WriteCaller = Annotated[Caller, Depends(require("write"))]


# -- the command line -------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    from index.catalog import default_database_url

    parser = argparse.ArgumentParser(prog="python -m service keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="catalog URL (default: SQLite beside --index)")
    parser.add_argument("--index", default="data/index", help="index folder, to find the default catalog")
    sub = parser.add_subparsers(dest="action", required=True)
    c = sub.add_parser("create", help="create a key and print it (once)")
    c.add_argument("--name", required=True)
    c.add_argument("--scope", action="append", choices=SCOPES, required=True, help="repeatable")
    c.add_argument("--rate-limit", type=int, default=None, help="requests per minute (default: the server's)")
    sub.add_parser("list", help="list keys (never the keys themselves)")
    r = sub.add_parser("revoke", help="revoke keys at once")
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--id", type=int)
    who.add_argument("--name")
    args = parser.parse_args(argv)

    catalog = Catalog(args.database_url or default_database_url(args.index))
    try:
        catalog.migrate()
        if args.action == "create":
            key, row = create_key(catalog, args.name, args.scope, args.rate_limit)
            print(key)
            print(f"created key {row.id} {row.name!r} with scopes {row.scopes}; store it now, it is not shown again",
                  file=sys.stderr)
        elif args.action == "list":
            for row in list_keys(catalog):
                state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
                print(f"{row.id}\t{row.name}\t{row.prefix}…\t{row.scopes}\t{row.rate_limit or 'default'}/min\t{state}")
        else:
            rows = revoke_keys(catalog, args.id, args.name)
            if not rows:
                print("error: no such active key", file=sys.stderr)
                return 2
            print(f"revoked {', '.join(f'{r.id} {r.name!r}' for r in rows)}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        catalog.dispose()
    return 0
