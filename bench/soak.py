"""A bounded soak of the whole system on loopback: the service and a batch job writing one catalog, under
clients that search, classify, upload, PATCH and delete, with a share of bad requests.

    python bench/soak.py [--seconds 300] [--clients 32] [--items 300] [--database-url URL]

- A manifest of ``--items`` emoji (the full set beside the checkout, else the sample) is indexed by a
  randomly initialised ``--model`` (the soak tests the system, not the encoder's quality); the service
  (``python -m service``, a real uvicorn) serves it with a write key.
- ``--clients`` threads run for ``--seconds``: text / image / similar searches, classifies, item reads,
  uploads (every one new bytes), PATCHes (each client its own key, a counter), deletes, and
  ``--bad-share`` bad requests (ids past int64, k=0, wrong vector sizes, bytes that are no image, metadata
  that is no object, deep JSON, unknown routes). Every acknowledged write goes into a log.
- Half-way, ``python -m index build --delete-missing`` runs as its own process on a changed manifest (rows
  dropped, rows added, metadata changed) while the clients go on.
- At the end the log is checked against the service and the catalog: every acknowledged upload and every
  batch item still in the manifest is there, with the last acknowledged value of every PATCHed key;
  every acknowledged delete (and every dropped row) is gone, from reads and from searches; no 5xx at any
  time; ``python -m index verify`` is ok. The server's RSS is sampled throughout.

Reference measured in the same run: the p50 of each request kind from one client on the idle server
before the soak; the soak's p50 / p99 are reported as ratios to it. Writes ``bench/results/soak_cpu.json``.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, emoji_rows, random_encoder, save, write_jsonl

sys.path.insert(0, str(REPO))  # after ``common``: the ``service`` package, not bench/service.py, is imported below


def _bench_service():
    """bench/service.py (its ``server`` and ``percentile``), under a name that leaves ``service`` to the package."""
    spec = importlib.util.spec_from_file_location("bench_service", Path(__file__).with_name("service.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

KINDS = ("text", "image", "similar", "classify", "get", "upload", "patch", "delete")
WEIGHTS = (25, 12, 10, 10, 8, 15, 14, 6)  # of the good requests
WRITES = ("upload", "patch", "delete")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def server_pid(port: int) -> int | None:
    """The pid of the process listening on ``port`` (the uvicorn ``bench/service.py`` started)."""
    wanted = f":{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(wanted) and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def unique_png(base: bytes, n: int) -> bytes:
    """``base`` (an emoji PNG) with a few pixels set from ``n``: new bytes and a new picture every time."""
    from PIL import Image

    image = Image.open(io.BytesIO(base)).convert("RGB")
    rng = random.Random(n)
    for _ in range(6):
        image.putpixel((rng.randrange(image.width), rng.randrange(image.height)),
                       (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def bad_requests(dim: int) -> list[tuple[str, str, dict]]:
    """(method, path, httpx keyword arguments) of requests a server must answer with a 4xx."""
    deep = {"a": 1}
    for _ in range(200):
        deep = {"a": deep}
    return [
        ("POST", "/v1/search/similar", {"json": {"id": 2**64}}),
        ("POST", "/v1/search/text", {"json": {"query": "x", "k": 0}}),
        ("POST", "/v1/search/text", {"json": {"query": "   "}}),
        ("POST", "/v1/search/text", {"json": {"query": "x", "filter": deep}}),
        ("POST", "/v1/search/text", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("POST", "/v1/search/vector", {"json": {"vector": [0.1] * (dim + 1)}}),
        ("POST", "/v1/search/vector", {"json": {"vector": ["a"] * 50}}),
        ("POST", "/v1/search/image", {"files": {"file": ("x.png", b"not an image", "image/png")}}),
        ("POST", "/v1/classify", {"files": {"file": ("x.png", b"\x89PNG\r\n\x1a\n", "image/png")},
                                  "data": {"labels": "a"}}),
        ("POST", "/v1/classify", {"data": {"labels": "a"}}),
        ("POST", "/v1/items", {"files": {"file": ("x.png", b"GIF89a", "image/gif")}}),
        ("POST", "/v1/items", {"files": {"file": ("x.png", b"x", "image/png")}, "data": {"metadata": "[1]"}}),
        ("PATCH", "/v1/items/1", {"json": {"metadata": [1, 2]}}),
        ("PATCH", "/v1/items/1", {"json": {"metadata": {"a": 1}}, "headers": {"if-match": '"1-999999"'}}),
        ("GET", "/v1/items/abc", {}),
        ("GET", f"/v1/items/{2**63}", {}),
        ("DELETE", "/v1/items/999999999", {}),
        ("GET", "/v1/nothing-here", {}),
    ]


class Log:
    """What the server acknowledged, and every status it answered (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: set[int] = set()  # ids believed live (batch items at the start, acknowledged uploads)
        self.uploaded: dict[int, dict] = {}  # id -> metadata given with the upload
        self.deleted: set[int] = set()
        self.patched: dict[tuple[int, str], int] = {}  # (id, key) -> the last acknowledged value
        self.statuses: collections.Counter = collections.Counter()
        self.server_errors: list[str] = []
        self.bad_not_4xx: list[str] = []
        self.latency: dict[str, list[float]] = collections.defaultdict(list)

    def pick_live(self, rng: random.Random) -> int | None:
        with self.lock:
            return rng.choice(tuple(self.live)) if self.live else None

    def record(self, kind: str, r, seconds: float) -> None:
        """A request's status and latency; a 5xx, or a bad request that did not get a 4xx, is kept."""
        with self.lock:
            self.statuses[r.status_code] += 1
            self.latency[kind].append(seconds)
            if r.status_code >= 500:
                self.server_errors.append(f"{kind} {r.request.method} {r.request.url.path}: {r.status_code} "
                                          f"{r.text[:200]}")
            if kind == "bad" and not 400 <= r.status_code < 500:
                self.bad_not_4xx.append(f"{r.request.method} {r.request.url.path}: {r.status_code}")


def read_request(http, kind: str, rng: random.Random, target: int | None, images: list[bytes], labels: list[str],
                 words: list[str]):
    """One search, classify or get request of ``kind``."""
    if kind == "text":
        return http.post("/v1/search/text", json={"query": rng.choice(words), "k": 10})
    if kind == "image":
        return http.post("/v1/search/image", files={"file": ("q.png", rng.choice(images), "image/png")},
                         data={"k": "10"})
    if kind == "similar":
        return http.post("/v1/search/similar", json={"id": target or 1, "k": 10})
    if kind == "classify":
        return http.post("/v1/classify", files={"file": ("q.png", rng.choice(images), "image/png")},
                         data={"labels": rng.sample(labels, 4)})
    return http.get(f"/v1/items/{target or 1}")  # get


def write_request(http, kind: str, rng: random.Random, target: int | None, log: Log, c: int, counter: int,
                  images: list[bytes]):
    """One upload, patch or delete, logged once acknowledged; None when there is no live item to change."""
    if kind == "upload":
        meta = {"by": c, "n": counter}
        r = http.post("/v1/items", files={"file": ("u.png", unique_png(rng.choice(images), c * 10**7 + counter),
                                                   "image/png")},
                      data={"metadata": json.dumps(meta)})
        if r.status_code == 201:
            with log.lock:
                log.uploaded[r.json()["id"]] = meta
                log.live.add(r.json()["id"])
        return r
    if target is None:
        return None
    if kind == "patch":
        r = http.patch(f"/v1/items/{target}", json={"metadata": {f"c{c}": counter}})
        if r.status_code == 200:
            with log.lock:
                log.patched[(target, f"c{c}")] = counter
        return r
    r = http.delete(f"/v1/items/{target}")  # delete
    if r.status_code == 204:
        with log.lock:
            log.deleted.add(target)
            log.live.discard(target)
    return r


def client_loop(c: int, base: str, key: str, deadline: float, log: Log, images: list[bytes], labels: list[str],
                words: list[str], bad: list[tuple[str, str, dict]], bad_share: float) -> None:
    import httpx

    rng = random.Random(c)
    counter = 0
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
        while time.monotonic() < deadline:
            counter += 1
            if rng.random() < bad_share:
                method, path, kw = rng.choice(bad)
                started = time.perf_counter()
                r = http.request(method, path, **kw)
                kind = "bad"
            else:
                kind = rng.choices(KINDS, WEIGHTS)[0]
                target = log.pick_live(rng)
                started = time.perf_counter()
                if kind in WRITES:
                    r = write_request(http, kind, rng, target, log, c, counter, images)
                    if r is None:
                        continue
                else:
                    r = read_request(http, kind, rng, target, images, labels, words)
            log.record(kind, r, time.perf_counter() - started)


def check_catalog(url: str, log: Log, dropped: list[dict], dropped_ids: set[int], added: list[dict]):
    """The log against the catalog (what every read answers from): items lost, resurrected, rows the job
    should have dropped, patches lost; and the ids expected live, the ids gone, the catalog's rows."""
    from index.catalog import Catalog

    catalog = Catalog(url)
    by_source = catalog.sources("default")
    added_ids = {by_source[r["file"]] for r in added if r["file"] in by_source}
    gone = log.deleted | dropped_ids  # deleted through the API, or by the job (their rows dropped)
    expected_live = ((log.live - dropped_ids) | added_ids) - log.deleted
    live = catalog.get_many(expected_live | gone | {i for i, _ in log.patched})
    lost = sorted(expected_live - set(live)) + [r["file"] for r in added if r["file"] not in by_source]
    resurrected = sorted(gone & set(live))
    not_dropped = [r["file"] for r in dropped if catalog.find("default", r["file"]) is not None]
    lost_patches = [(i, k, v, live[i].meta.get(k)) for (i, k), v in sorted(log.patched.items())
                    if i not in gone and (i not in live or live[i].meta.get(k) != v)]
    catalog.dispose()
    return lost, resurrected, not_dropped, lost_patches, expected_live, gone, live


def check_api(base: str, key: str, expected_live: set[int], gone: set[int], live: dict, words: list[str]):
    """A sample of the catalog's answers through the API: where it disagrees, and deleted items that search finds."""
    import httpx

    sample = random.Random(1)
    disagree = []  # where the API answers otherwise than the catalog
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
        for i in sample.sample(sorted(expected_live), min(100, len(expected_live))):
            r = http.get(f"/v1/items/{i}")
            if r.status_code != 200 or (i in live and r.json()["metadata"] != live[i].meta):
                disagree.append((i, r.status_code))
        for i in sample.sample(sorted(gone), min(100, len(gone))):
            if http.get(f"/v1/items/{i}").status_code != 404:
                disagree.append((i, "deleted but served"))
        found_deleted = set()
        for w in words[:30]:
            hits = http.post("/v1/search/text", json={"query": w, "k": 100}).json()["results"]
            found_deleted |= {h["id"] for h in hits} & gone
    return disagree, found_deleted


def latency_table(latency: dict[str, list[float]], idle: dict[str, list[float]], percentile) -> dict[str, dict]:
    """Per kind of request: count, p50 and p99 under load, p50 on the idle server, and their ratio."""
    def ms(xs, q):
        return round(percentile(xs, q) * 1000, 1) if xs else None

    table = {}
    for kind in (*KINDS, "bad"):
        xs, ref = latency.get(kind, []), idle.get(kind, [])
        ratio = round(percentile(xs, 0.5) / percentile(ref, 0.5), 2) if xs and ref else None
        table[kind] = {"n": len(xs), "p50_ms": ms(xs, 0.5), "p99_ms": ms(xs, 0.99), "idle_p50_ms": ms(ref, 0.5),
                       "p50_ratio_to_idle": ratio}
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=300.0, help="how long the clients run")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--items", type=int, default=300, help="images in the batch job's manifest")
    p.add_argument("--bad-share", type=float, default=0.1, help="share of bad requests")
    p.add_argument("--model", default="lookalike-micro", help="architecture of the random-weights encoder")
    p.add_argument("--database-url", default=None, help="catalog (default: SQLite in a temporary folder)")
    p.add_argument("--name", default="soak_cpu")
    a = p.parse_args()

    from index.catalog import Catalog
    from index.job import BuildConfig, build
    from service.keys import create_key
    from training.encoder import read_metadata

    bench = _bench_service()
    percentile = bench.percentile

    _, rows = emoji_rows()
    rng = random.Random(0)
    rng.shuffle(rows)
    batch_rows, spare = rows[: a.items], rows[a.items:]
    images = [Path(r["file"]).read_bytes() for r in rows[:200]]
    labels = sorted({r["category"] for r in rows} | {r["subcategory"] for r in rows})
    words = [r["name"] for r in rows[:500]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder = str(random_encoder(a.model, tmp / "encoder.safetensors"))
        url = a.database_url or f"sqlite:///{tmp / 'catalog.db'}"
        manifest = write_jsonl(tmp / "manifest.jsonl", batch_rows)
        build(BuildConfig(encoder=encoder, source=manifest, out=tmp / "index", database_url=url, workers=0,
                          progress=False))
        catalog = Catalog(url)
        key, _ = create_key(catalog, "soak", ["read", "write"], rate_limit=10**9)
        log = Log()
        log.live |= catalog.live_ids("default")
        catalog.dispose()
        settings = {"reload_interval": "1", "publish_delay": "1", "upload_dir": str(tmp / "uploads"),
                    "anonymous_rate_limit_per_minute": "0", "request_timeout": "60"}
        with bench.server(encoder, tmp / "index", url, **settings) as base:
            pid = server_pid(int(base.rsplit(":", 1)[1]))
            bad = bad_requests(int(read_metadata(Path(encoder))["dim"]))

            # the reference: each kind of request from one client on the idle server (its writes are logged too)
            client_loop(0, base, key, time.monotonic() + min(20.0, a.seconds / 10), log, images, labels, words,
                        [], 0.0)
            idle, log.latency = log.latency, collections.defaultdict(list)
            rss = [(0.0, rss_kib(pid))] if pid else []
            started = time.monotonic()
            deadline = started + a.seconds
            threads = [threading.Thread(target=client_loop, args=(c, base, key, deadline, log, images, labels,
                                                                  words, bad, a.bad_share))
                       for c in range(1, a.clients + 1)]
            for t in threads:
                t.start()

            # half-way: the nightly job, as its own process, on a changed manifest
            while time.monotonic() < started + a.seconds / 2:
                time.sleep(1)
                if pid:
                    rss.append((round(time.monotonic() - started, 1), rss_kib(pid)))
            dropped, kept = batch_rows[:10], batch_rows[10:]
            added = spare[:20]
            catalog = Catalog(url)
            dropped_ids = {item.id for item in (catalog.find("default", r["file"]) for r in dropped) if item}
            catalog.dispose()
            changed = [{**r, "category": "changed by the source"} if i % 10 == 0 else r for i, r in enumerate(kept)]
            write_jsonl(manifest, changed + added)
            job_started = time.monotonic() - started
            print(f"the batch job starts at {job_started:.0f} s", file=sys.stderr)
            job = subprocess.Popen([sys.executable, "-m", "index", "build", "--encoder", encoder, "--source",
                                    str(manifest), "--out", str(tmp / "index"), "--database-url", url,
                                    "--delete-missing", "--no-progress", "--workers", "0"],
                                   cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                   stdout=open(tmp / "job.out", "w"), stderr=open(tmp / "job.err", "w"))
            job_seconds = None
            while any(t.is_alive() for t in threads) or job_seconds is None:
                time.sleep(1)
                if job_seconds is None and job.poll() is not None:
                    job_seconds = time.monotonic() - started - job_started
                if pid:
                    rss.append((round(time.monotonic() - started, 1), rss_kib(pid)))
            for t in threads:
                t.join()
            job.wait()
            job_out, job_err = (tmp / "job.out").read_text(), (tmp / "job.err").read_text()
            if job.returncode != 0:
                raise SystemExit(f"the batch job failed:\n{job_err[-2000:]}")

            # the checks: the log against the catalog (what every read answers from), and a sample of it
            # through the API, once the publisher has caught up
            print(f"clients done at {time.monotonic() - started:.0f} s; checking", file=sys.stderr)
            time.sleep(3 * float(settings["publish_delay"]) + 2 * float(settings["reload_interval"]))
            lost, resurrected, not_dropped, lost_patches, expected_live, gone, live = check_catalog(
                url, log, dropped, dropped_ids, added)
            disagree, found_deleted = check_api(base, key, expected_live, gone, live, words)
            end_rss = rss_kib(pid) if pid else 0
        verify = subprocess.run([sys.executable, "-m", "index", "verify", str(tmp / "index"), "--database-url", url],
                                cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)

    latency = latency_table(log.latency, idle, percentile)
    total = sum(log.statuses.values())
    result = {
        "command": "python bench/soak.py " + " ".join(sys.argv[1:]),
        "seconds": a.seconds, "clients": a.clients, "items": a.items, "model": a.model,
        "database": url.split(":", 1)[0], "requests": total, "requests_per_second": round(total / a.seconds, 1),
        "statuses": {str(k): v for k, v in sorted(log.statuses.items())},
        "server_errors": len(log.server_errors), "server_error_examples": log.server_errors[:10],
        "bad_requests_not_4xx": log.bad_not_4xx[:10],
        "acknowledged": {"uploads": len(log.uploaded), "deletes": len(log.deleted), "patched_keys": len(log.patched)},
        "batch_job": {"started_at_s": round(job_started, 1), "seconds": round(job_seconds, 1),
                      "ended_while_clients_ran": job_started + job_seconds < a.seconds,
                      "dropped_rows": len(dropped), "added_rows": len(added), "output": job_out.strip()[-400:]},
        "lost_items": lost[:20], "lost_count": len(lost),
        "resurrected_items": resurrected[:20], "resurrected_count": len(resurrected),
        "dropped_rows_still_live": not_dropped,
        "lost_patches": lost_patches[:20], "lost_patch_count": len(lost_patches),
        "deleted_items_in_search_results": sorted(found_deleted)[:20],
        "api_disagrees_with_catalog": disagree[:20],
        "verify_ok": verify.returncode == 0, "verify_output": verify.stdout.strip()[-400:],
        "server_rss_mib": {"start": round(rss[0][1] / 1024, 1) if rss else None,
                           "end": round(end_rss / 1024, 1) if rss else None,
                           "max": round(max(v for _, v in rss) / 1024, 1) if rss else None,
                           "growth": round((end_rss - rss[0][1]) / 1024, 1) if rss else None,
                           "samples": [(t, round(v / 1024, 1)) for t, v in rss[:: max(1, len(rss) // 30)]]},
        "latency": latency,
    }
    path = save(a.name, result)
    ok = not (log.server_errors or log.bad_not_4xx or lost or resurrected or not_dropped or lost_patches
              or found_deleted or disagree) and verify.returncode == 0
    print(json.dumps({k: v for k, v in result.items() if k not in ("latency",)}, indent=1))
    for kind, row in latency.items():
        print(f"{kind:9s} n={row['n']:6d} p50 {row['p50_ms']} ms (idle {row['idle_p50_ms']} ms, "
              f"x{row['p50_ratio_to_idle']}) p99 {row['p99_ms']} ms")
    print(f"{'ok' if ok else 'FAILED'}: wrote {path}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
