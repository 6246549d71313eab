"""Property-based requests generated from the OpenAPI schema (schemathesis): whatever a caller sends,
the service answers with a documented 2xx/4xx, never a 5xx. Bounded to a few examples per operation."""

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from index.build import BuildConfig, build  # noqa: E402
from index.catalog import Catalog  # noqa: E402
from service.app import create_app  # noqa: E402
from service.keys import create_key  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.state import Resources  # noqa: E402
from tests.conftest import copy_sample, sample_rows  # noqa: E402


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, micro_encoder):
    root = tmp_path_factory.mktemp("fuzz")
    folder = root / "imgs"
    copy_sample(sample_rows()[:6], folder)
    url = f"sqlite:///{root / 'catalog.db'}"
    build(BuildConfig(encoder=str(micro_encoder), source=folder, out=root / "index", database_url=url, workers=0,
                      progress=False))
    key, _ = create_key(Catalog(url), "fuzzer", ["admin"])
    cfg = Settings(encoder=str(micro_encoder), index=root / "index", database_url=url, max_k=20)
    app = create_app(cfg)
    resources = Resources.load(cfg)
    app.state.resources = resources  # what the lifespan would do; the generated calls do not run it
    yield app, key
    resources.close()


def test_no_request_gets_a_server_error(fuzzed):
    """Every operation of the schema, a dozen generated requests each (deterministic), with an admin key."""
    app, key = fuzzed
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(headers={**(case.headers or {}), "Authorization": f"Bearer {key}"})
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}")
            if response.status_code >= 400:
                assert set(response.json()) == {"error"}  # the one error shape

        check()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert {"POST /v1/search/text", "POST /v1/search/image", "POST /v1/classify", "POST /v1/items",
            "DELETE /v1/items/{item_id}"} <= set(checked)
