"""Latency and throughput of the HTTP service against the same work done in-process, in one run.

1. Web-layer overhead: p50/p99 of text search and of image search, one request at a time, over
   HTTP to a real uvicorn (``python -m service``) and in-process (encode + FAISS search + catalog
   rows, the same calls the service makes). ratio = HTTP p50 / in-process p50 (goal <= 1.15).
   Two clients: httpx (what applications and ``service.client`` use) and the standard
   library's ``http.client`` on one keep-alive connection with the request bodies prepared
   beforehand, whose own cost is small, so its ratio is closer to the server's share alone.
   The ratio depends on the encoder's cost: ``--model ViT-B-32`` shows it for a model of
   production size (random weights; the speed does not depend on them).
2. Batching: image-search requests per second from 16 concurrent clients, with micro-batching
   (``max_batch`` 32) and without (``max_batch`` 1). ratio = with / without (goal >= 2).

    python bench/service.py [--encoder FILE] [--model lookalike-tiny] [--queries 200] [--clients 16]

The index is the emoji images (the full set beside the checkout, else the sample), embedded by
``--encoder`` or by a randomly initialised ``--model`` (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from common import REPO, emoji_rows, random_encoder, save, write_jsonl

sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


THREADS = max(1, (os.cpu_count() or 2) // 2)  # torch threads on each side; the client needs the rest


@contextmanager
def server(encoder: str, index: Path, url: str, **settings: str):
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update({"LOOKALIKE_ENCODER": encoder, "LOOKALIKE_INDEX": str(index), "LOOKALIKE_DATABASE_URL": url,
                "LOOKALIKE_PORT": str(port), "LOOKALIKE_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1",
                "OMP_NUM_THREADS": str(THREADS),
                **{f"LOOKALIKE_{k.upper()}": v for k, v in settings.items()}})
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise SystemExit("the service did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class LeanClient:
    """POSTs over one keep-alive ``http.client`` connection: little client-side work to time."""

    def __init__(self, base: str) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def post(self, path: str, body: bytes, content_type: str) -> bytes:
        self.conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status}: {data[:300]!r}")
        return data

    def close(self) -> None:
        self.conn.close()


def multipart(image: bytes, k: int) -> tuple[bytes, str]:
    """A multipart/form-data body with the image as ``file`` and ``k``, and its content type."""
    boundary = "lookalike-bench-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n{k}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def once(fn, *args) -> float:
    """Seconds that one call ``fn(*args)`` takes."""
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def requests_per_second(base: str, a: argparse.Namespace, image_bytes: list[bytes]) -> float:
    """``a.clients`` threads, each posting ``a.requests_per_client`` image searches one after another."""
    import httpx

    errors: list[str] = []

    def client(c):
        with httpx.Client(base_url=base, timeout=120) as http:
            for j in range(a.requests_per_client):
                i = (c * a.requests_per_client + j) % len(image_bytes)
                r = http.post("/v1/search/image", files={"file": ("q.png", image_bytes[i], "image/png")},
                              data={"k": str(a.k)})
                if r.status_code != 200:
                    errors.append(str(r.status_code))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} failed requests: {errors[:5]}")
    return a.clients * a.requests_per_client / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default=None)
    p.add_argument("--model", default="lookalike-tiny")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests-per-client", type=int, default=20)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--limit", type=int, default=0, help="index only this many images (0: all)")
    p.add_argument("--device", default="cpu", help="torch device of the encoder, in the server and in-process")
    p.add_argument("--name", default="service_cpu")
    a = p.parse_args()

    import httpx
    import torch

    from index.catalog import Catalog
    from index.decode import open_image
    from index.job import BuildConfig, build
    from index.version import open_current
    from training.encoder import load_encoder

    torch.set_num_threads(THREADS)  # as many as the server gets (OMP_NUM_THREADS)
    root, rows = emoji_rows()
    rows = rows[: a.limit] if a.limit else rows
    queries = [r["name"] for r in rows][: a.queries]
    image_files = [Path(r["file"]) for r in rows][: a.queries]
    image_bytes = [f.read_bytes() for f in image_files]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = a.encoder or str(random_encoder(a.model, tmp / "encoder.safetensors"))
        url = f"sqlite:///{tmp / 'catalog.db'}"
        build(BuildConfig(encoder=spec, source=write_jsonl(tmp / "m.jsonl", rows), out=tmp / "index",
                          database_url=url, device=a.device, progress=False))

        # in-process: the calls the service makes for one query
        encoder, version, catalog = load_encoder(spec, a.device), open_current(tmp / "index"), Catalog(url)

        def local_text(i):
            v = encoder.encode_texts([queries[i]])
            _, ids = version.search(v, a.k)
            catalog.get_many(int(x) for x in ids[0] if x >= 0)

        def local_image(i):
            v = encoder.encode_images([open_image(image_bytes[i])])
            _, ids = version.search(v, a.k)
            catalog.get_many(int(x) for x in ids[0] if x >= 0)

        local_text(0), local_image(0)  # warm-up
        local = {"text": [], "image": []}

        with server(spec, tmp / "index", url, device=a.device) as base, httpx.Client(base_url=base, timeout=60) as http:
            def http_text(i):
                http.post("/v1/search/text", json={"query": queries[i], "k": a.k}).raise_for_status()

            def http_image(i):
                http.post("/v1/search/image", files={"file": ("q.png", image_bytes[i], "image/png")},
                          data={"k": str(a.k)}).raise_for_status()

            lean = LeanClient(base)
            texts = [json.dumps({"query": q, "k": a.k}).encode() for q in queries]
            uploads = [multipart(b, a.k) for b in image_bytes]
            http_text(0), http_image(0), lean.post("/v1/search/text", texts[0], "application/json")
            # in-process and the two clients alternate query by query, so drifting load hits all alike
            # (the server idles while this process works alone, and the other way round)
            remote = {"text": [], "image": []}
            remote_lean = {"text": [], "image": []}
            for kind, in_process, via_httpx, via_lean, n in (
                    ("text", local_text, http_text,
                     lambda i: lean.post("/v1/search/text", texts[i], "application/json"), len(texts)),
                    ("image", local_image, http_image,
                     lambda i: lean.post("/v1/search/image", *uploads[i]), len(uploads))):
                for i in range(n):
                    local[kind].append(once(in_process, i))
                    remote[kind].append(once(via_httpx, i))
                    remote_lean[kind].append(once(via_lean, i))
            lean.close()
        catalog.dispose()

        throughput = {}
        for label, max_batch in (("batched", "32"), ("unbatched", "1")):
            with server(spec, tmp / "index", url, max_batch=max_batch, device=a.device) as base:
                throughput[label] = requests_per_second(base, a, image_bytes)

    ms = lambda xs, q: round(percentile(xs, q) * 1000, 2)  # noqa: E731
    latency = {kind: {"http_p50_ms": ms(remote[kind], 0.5), "http_p99_ms": ms(remote[kind], 0.99),
                      "inprocess_p50_ms": ms(local[kind], 0.5), "inprocess_p99_ms": ms(local[kind], 0.99),
                      "ratio_p50": statistics.median(remote[kind]) / statistics.median(local[kind]),
                      "lean_client_p50_ms": ms(remote_lean[kind], 0.5),
                      "lean_client_p99_ms": ms(remote_lean[kind], 0.99),
                      "lean_client_ratio_p50": statistics.median(remote_lean[kind]) / statistics.median(local[kind])}
               for kind in ("text", "image")}
    result = {
        "command": "service.py " + " ".join(sys.argv[1:]),
        "model": a.model, "device": a.device, "images": len(rows), "data": str(root),
        "encoder": a.encoder or f"random {a.model}", "k": a.k,
        "torch_threads": THREADS,
        "latency": latency,
        "throughput_rps": {**throughput, "clients": a.clients,
                           "ratio": throughput["batched"] / throughput["unbatched"]},
    }
    path = save(a.name, result)
    for kind, r in latency.items():
        print(f"{kind} search p50: HTTP {r['http_p50_ms']} ms (httpx), {r['lean_client_p50_ms']} ms (http.client); "
              f"in-process {r['inprocess_p50_ms']} ms; ratio {r['ratio_p50']:.2f} / {r['lean_client_ratio_p50']:.2f} "
              f"(p99 {r['http_p99_ms']} / {r['lean_client_p99_ms']} / {r['inprocess_p99_ms']} ms)")
    print(f"{a.clients} clients, image search: {throughput['batched']:.1f} req/s batched, "
          f"{throughput['unbatched']:.1f} unbatched, ratio {result['throughput_rps']['ratio']:.2f}\nwrote {path}")


if __name__ == "__main__":
    main()
