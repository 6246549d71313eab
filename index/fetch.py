"""Reading an item's bytes: a local file, or an http(s) URL fetched with a timeout, retries and a size cap.

URL sources come from manifests whose image column holds ``http://`` or ``https://``
locations. Each DataLoader worker fetches one item at a time, so at most ``--workers``
downloads run at once (the concurrency bound). A server error or a dropped connection is
retried with a growing pause; a 4xx, a body over ``max_bytes`` or the last failed attempt
becomes the item's recorded reason, and the item is skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from index.shards import is_shard_member, read_member

DEFAULT_MAX_BYTES = 50 * 2**20


class FetchError(OSError):
    """An item's bytes could not be read; the message is its recorded reason."""


@dataclass(frozen=True)
class FetchLimits:
    timeout: float = 20.0  # seconds per attempt (connect, and between bytes)
    retries: int = 2  # further attempts after a server error or a network failure
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    max_bytes: int = DEFAULT_MAX_BYTES


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def read_bytes(location: str | Path, limits: FetchLimits = FetchLimits()) -> bytes:
    location = str(location)
    if not is_url(location):
        try:
            if is_shard_member(location):
                return read_member(location)
            return Path(location).read_bytes()
        except OSError as exc:
            raise FetchError(f"unreadable: {exc.strerror or exc}") from None
    return _download(location, limits)


def _download(url: str, limits: FetchLimits) -> bytes:
    import httpx

    last = "no attempt"
    for attempt in range(limits.retries + 1):
        if attempt:
            time.sleep(limits.backoff * 2 ** (attempt - 1))
        try:
            with httpx.stream("GET", url, timeout=limits.timeout, follow_redirects=True) as response:
                if response.status_code >= 500:
                    last = f"http {response.status_code}"
                    continue
                if response.status_code >= 400:
                    raise FetchError(f"http {response.status_code}")
                declared = int(response.headers.get("content-length") or 0)
                if declared > limits.max_bytes:
                    raise FetchError(f"too_large: {declared} bytes > {limits.max_bytes}")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limits.max_bytes:
                        raise FetchError(f"too_large: more than {limits.max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TransportError as exc:  # refused, reset, timed out: worth another try
            last = f"network: {type(exc).__name__}"
    raise FetchError(f"{last} after {limits.retries + 1} attempts")
