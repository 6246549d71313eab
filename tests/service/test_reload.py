"""A newly published index version is served without a restart, and no request fails meanwhile."""

import threading
import time

import httpx

from index.job import BuildConfig, build
from tests.conftest import copy_sample, running_service, sample_rows, wait_for


def test_new_versions_are_picked_up_while_requests_run(micro_encoder, other_encoder, tmp_path):
    rows = sample_rows()
    folder = tmp_path / "imgs"
    copy_sample(rows[:10], folder)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    cfg = BuildConfig(encoder=str(micro_encoder), source=folder, out=tmp_path / "index", database_url=url,
                      workers=0, progress=False)
    first = build(cfg).version.name

    with running_service(micro_encoder, cfg.out, url, settings={"reload_interval": "0.2"}) as base:
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer():
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/v1/search/text", json={"query": "face", "k": 12})
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        versions.add(r.json()["index_version"])

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            copy_sample(rows[10:14], folder)
            second = build(cfg).version.name
            assert wait_for(lambda: httpx.get(f"{base}/healthz").json()["index_version"] == second)
            health = httpx.get(f"{base}/healthz").json()
            assert health["count"] == 14
            assert len(httpx.post(f"{base}/v1/search/text", json={"query": "face", "k": 20}).json()["results"]) == 14

            # a version built by another encoder is published: refused, the served one stays
            build(BuildConfig(encoder=str(other_encoder), source=folder, out=cfg.out, database_url=url, workers=0,
                              progress=False))
            time.sleep(1.0)
            assert httpx.get(f"{base}/healthz").json()["index_version"] == second
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests, statuses {set(statuses)}"
    assert {first, second} <= versions
