"""A small typed Python client for the lookalike API, over httpx.

    from service.client import Client

    with Client("http://127.0.0.1:8000") as api:
        hits = api.search_text("dog face", k=5).results
        for hit in api.search_image(Path("query.png"), k=5).results:
            print(hit.score, hit.source)
        probs = api.classify(Path("apple.png"), ["fruit", "animal"]).labels

Responses are the service's own pydantic models (``service.schemas``), so the client and
the server share one contract. Every error response becomes ``ApiError`` with the
service's ``status``, ``code``, ``message`` and ``detail``. ``Client(http=...)`` wraps an
existing ``httpx.Client`` (for example FastAPI's ``TestClient``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from service.schemas import ClassifyResponse, Health, ItemOut, Ready, SearchResponse

M = TypeVar("M", bound=BaseModel)
ImageInput = bytes | str | Path | Any  # bytes, a file path, or a PIL image


class ApiError(Exception):
    """An error response of the service."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.detail = status, code, message, detail


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, timeout: float = 30.0,
                 http: httpx.Client | None = None) -> None:
        self._owned = http is None
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout)

    # -- search ------------------------------------------------------------------------
    def search_text(self, query: str, k: int = 10, offset: int = 0) -> SearchResponse:
        return self._post(SearchResponse, "/v1/search/text", json={"query": query, "k": k, "offset": offset})

    def search_image(self, image: ImageInput, k: int = 10, offset: int = 0) -> SearchResponse:
        return self._post(SearchResponse, "/v1/search/image", files={"file": _upload(image)},
                          data={"k": str(k), "offset": str(offset)})

    def similar(self, item_id: int, k: int = 10, offset: int = 0) -> SearchResponse:
        """More like this: neighbours of an indexed item, the item itself left out."""
        return self._post(SearchResponse, "/v1/search/similar", json={"id": item_id, "k": k, "offset": offset})

    def search_vector(self, vector: Sequence[float], k: int = 10, offset: int = 0) -> SearchResponse:
        return self._post(SearchResponse, "/v1/search/vector",
                          json={"vector": [float(v) for v in vector], "k": k, "offset": offset})

    # -- classification and items ------------------------------------------------------------
    def classify(self, image: ImageInput, labels: Sequence[str],
                 templates: Sequence[str] | None = None) -> ClassifyResponse:
        data: dict[str, Any] = {"labels": list(labels)}
        if templates:
            data["templates"] = list(templates)
        return self._post(ClassifyResponse, "/v1/classify", files={"file": _upload(image)}, data=data)

    def item(self, item_id: int) -> ItemOut:
        return self._parse(ItemOut, self.http.get(f"/v1/items/{item_id}"))

    def item_image(self, item_id: int) -> bytes:
        return self._check(self.http.get(f"/v1/items/{item_id}/image")).content

    def health(self) -> Health:
        return self._parse(Health, self.http.get("/healthz"))

    def ready(self) -> Ready:
        return self._parse(Ready, self.http.get("/readyz"))

    # -- plumbing ------------------------------------------------------------------------
    def _post(self, model: type[M], path: str, **kwargs: Any) -> M:
        return self._parse(model, self.http.post(path, **kwargs))

    def _parse(self, model: type[M], response: httpx.Response) -> M:
        return model.model_validate(self._check(response).json())

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        try:
            error = response.json()["error"]
            raise ApiError(response.status_code, error["code"], error["message"], error.get("detail"))
        except (ValueError, KeyError, TypeError):  # not the service's error shape (a proxy, say)
            raise ApiError(response.status_code, "http_error", response.text[:500]) from None

    def close(self) -> None:
        if self._owned:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _upload(image: ImageInput) -> tuple[str, bytes, str]:
    """(filename, bytes, content type) for a multipart image field."""
    if isinstance(image, bytes):
        return "image", image, "application/octet-stream"
    if isinstance(image, (str, Path)):
        path = Path(image)
        return path.name, path.read_bytes(), "application/octet-stream"
    if hasattr(image, "save"):  # a PIL image
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return "image.png", buf.getvalue(), "image/png"
    raise TypeError(f"an image is bytes, a path or a PIL image, not {type(image).__name__}")
