"""URL sources: images fetched over HTTP from a loopback server, with retries, size caps and reasons."""

import http.server
import json
import threading

import pytest

from index.catalog import Catalog
from index.fetch import FetchError, FetchLimits, read_bytes
from index.job import BuildConfig, build
from index.verify import verify
from tests.conftest import SAMPLE, sample_rows


@pytest.fixture(scope="module")
def server():
    """Serves sample images; /flaky/* fails with 503 once per path, /big is 2 MB, anything else unknown is 404."""
    seen = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path
            if path.startswith("/flaky/") and path not in seen:
                seen.add(path)
                self.send_response(503)
                self.end_headers()
                return
            name = path.rsplit("/", 1)[-1]
            if path == "/big":
                body = b"\0" * (2 * 2**20)
            elif (SAMPLE / "google" / name).is_file():
                body = (SAMPLE / "google" / name).read_bytes()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_read_bytes(server):
    name = sample_rows()[0]["file"].rsplit("/", 1)[-1]
    fast = FetchLimits(timeout=5, retries=1, backoff=0.01, max_bytes=2**20)
    assert read_bytes(f"{server}/img/{name}", fast) == (SAMPLE / "google" / name).read_bytes()
    assert read_bytes(f"{server}/flaky/{name}", fast) == (SAMPLE / "google" / name).read_bytes()  # retried
    with pytest.raises(FetchError, match="http 404"):
        read_bytes(f"{server}/img/missing.png", fast)
    with pytest.raises(FetchError, match="too_large"):
        read_bytes(f"{server}/big", fast)
    with pytest.raises(FetchError, match="network"):
        read_bytes("http://127.0.0.1:9/x.png", FetchLimits(timeout=1, retries=1, backoff=0.01))
    with pytest.raises(FetchError, match="unreadable"):
        read_bytes("/no/such/file.png")


def test_a_manifest_of_urls_is_indexed_and_failures_recorded(server, micro_encoder, tmp_path):
    rows = [r for r in sample_rows() if r["vendor"] == "google"][:6]
    manifest = tmp_path / "urls.jsonl"
    lines = [{"file": f"{server}/img/{r['file'].rsplit('/', 1)[-1]}", "name": r["name"]} for r in rows]
    lines += [{"file": f"{server}/img/missing.png", "name": "gone"}, {"file": f"{server}/big", "name": "big"}]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    report = build(BuildConfig(encoder=str(micro_encoder), source=manifest, out=tmp_path / "index", database_url=url,
                               workers=2, progress=False, fetch=FetchLimits(timeout=5, retries=1, backoff=0.01,
                                                                            max_bytes=2**20)))
    assert report.indexed == 6
    reasons = {uri.rsplit("/", 1)[-1]: reason for uri, reason in report.failures}
    assert reasons["missing.png"] == "http 404" and reasons["big"].startswith("too_large")
    sources = Catalog(url).sources("default")
    assert all(s.startswith(server) for s in sources) and len(sources) == 6
    assert verify(tmp_path / "index", url).ok


def test_the_service_redirects_to_a_url_source(server, micro_encoder, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    name = sample_rows()[0]["file"].rsplit("/", 1)[-1]
    manifest = tmp_path / "urls.jsonl"
    manifest.write_text(json.dumps({"file": f"{server}/img/{name}"}) + "\n")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    build(BuildConfig(encoder=str(micro_encoder), source=manifest, out=tmp_path / "index", database_url=url,
                      workers=0, progress=False))
    with TestClient(create_app(Settings(encoder=str(micro_encoder), index=tmp_path / "index", database_url=url)),
                    follow_redirects=False) as client:
        (item_id,) = Catalog(url).sources("default").values()
        r = client.get(f"/v1/items/{item_id}/image")
        assert r.status_code == 307 and r.headers["location"] == f"{server}/img/{name}"
