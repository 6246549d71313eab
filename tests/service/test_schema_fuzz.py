"""Property-based requests generated from the OpenAPI schema (schemathesis): whatever a caller sends,
the service answers with a documented 2xx/4xx in the error shape, never a 5xx, with a write key and
without any key; and the links a stateful tool follows (create -> get -> patch -> delete) work.
Bounded to a few examples per operation, deterministic."""

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

import tests.service.schemathesis_hooks  # noqa: E402,F401  (real images for the image parts)
from index.catalog import Catalog  # noqa: E402
from index.job import BuildConfig, build  # noqa: E402
from service.app import create_app  # noqa: E402
from service.keys import create_key  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.state import Resources  # noqa: E402
from tests.conftest import copy_sample, sample_rows  # noqa: E402

BOUNDED = dict(deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, micro_encoder):
    root = tmp_path_factory.mktemp("fuzz")
    folder = root / "imgs"
    copy_sample(sample_rows()[:6], folder)
    url = f"sqlite:///{root / 'catalog.db'}"
    build(BuildConfig(encoder=str(micro_encoder), source=folder, out=root / "index", database_url=url, workers=0,
                      progress=False))
    key, _ = create_key(Catalog(url), "fuzzer", ["read", "write"])
    cfg = Settings(encoder=str(micro_encoder), index=root / "index", database_url=url,
                   anonymous_rate_limit_per_minute=0)  # the fuzzer is one address sending hundreds of requests
    app = create_app(cfg)
    resources = Resources.load(cfg)
    app.state.resources = resources  # what the lifespan would do; the generated calls do not run it
    app.state.collections = {cfg.collection: resources}
    yield app, {"Authorization": f"Bearer {key}"}
    resources.close()


def check(response, where: str) -> None:
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}, f"{where}: {response.text[:500]}"  # the one error shape
        assert set(response.json()["error"]) == {"code", "message", "detail"}


def fuzz(operation, headers: dict[str, str], accepted: dict[str, int]) -> None:
    """A dozen generated requests to one operation, each checked; ``accepted`` counts the 2xx by operation."""
    label = f"{operation.method.upper()} {operation.path}"

    @settings(max_examples=12, **BOUNDED)
    @given(case=operation.as_strategy())
    def one(case):
        response = case.call(headers={**(case.headers or {}), **headers})
        check(response, f"{case.method} {case.formatted_path}")
        accepted[label] = accepted.get(label, 0) + (response.status_code < 300)

    one()


@pytest.mark.parametrize("auth", ["write key", "no key"])
def test_no_request_gets_a_server_error(fuzzed, auth):
    """Every operation of the schema, a dozen generated requests each, and how many were accepted."""
    app, key = fuzzed
    headers = key if auth == "write key" else {}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    accepted = {}
    for result in schema.get_all_operations():
        fuzz(result.ok(), headers, accepted)
    searches = ("POST /v1/search/text", "POST /v1/search/image", "POST /v1/search/vector", "POST /v1/classify",
                "POST /v1/classify/batch", "POST /v1/search/batch")
    assert {"POST /v1/items", "DELETE /v1/items/{item_id}", *searches} <= set(accepted)
    # the schema states what the server takes: generated valid requests get through, images included
    assert all(accepted[label] > 0 for label in searches), accepted
    assert (accepted["POST /v1/items"] > 0) == (auth == "write key"), accepted


def test_the_links_of_a_created_item_lead_to_its_routes(fuzzed):
    """The links that stateful tools follow (create -> get -> image -> patch -> more like it -> delete), each
    called as the OpenAPI document says. (Schemathesis' own stateful phase runs against a live server; in
    process its replays meet a catalog that earlier examples changed, which Hypothesis calls flaky.)"""
    import io
    import uuid

    from fastapi.testclient import TestClient
    from PIL import Image

    app, key = fuzzed
    # The lifespan loads the resources afresh: schemathesis' ASGI calls above ran the app's shutdown.
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
        operations = {op["operationId"]: (method, path) for path, item in doc["paths"].items()
                      for method, op in item.items()}
        links = doc["paths"]["/v1/items"]["post"]["responses"]["201"]["links"]
        order = ["GetItem", "GetItemImage", "PatchItem", "MoreLikeItem", "DeleteItem"]
        assert set(order) <= set(links), links
        buf = io.BytesIO()  # bytes never uploaded before, so that this is a new item (201)
        Image.new("RGB", (17, 9), tuple(uuid.uuid4().bytes[:3])).save(buf, "PNG")
        created = client.post("/v1/items", files={"file": ("new.png", buf.getvalue(), "image/png")},
                              data={"metadata": '{"album": "linked"}'}, headers=key)
        assert created.status_code == 201, created.text
        item_id = created.json()["id"]
        for name in order:
            link = links[name]
            method, path = operations[link["operationId"]]
            assert set(link.get("parameters", {}).values()) | set(link.get("requestBody", {}).values()) <= {
                "$response.body#/id"}
            url = path.format(**{param: item_id for param in link.get("parameters", {})})
            body = {"id": item_id} if "requestBody" in link else {"metadata": {"album": "moved"}} if method == "patch" \
                else None
            r = client.request(method.upper(), url, json=body, headers=key)
            check(r, f"{name}: {method} {url}")
            assert r.status_code < 300, f"{name}: {r.status_code} {r.text[:300]}"
        assert client.get(f"/v1/items/{item_id}").status_code == 404  # the last link deleted it
