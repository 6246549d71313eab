"""The OpenAPI document as served: FastAPI's, with every limit the server enforces filled in from the
same settings that enforce it, so that generated clients and fuzzers send nothing that is bound to fail.

- ``limit(maximum="max_k")`` markers (``service.schemas``) become ``"maximum": 100``; ``dim`` is the
  encoder's embedding size (the smallest and largest over the served collections).
- Image fields of multipart bodies declare the image types they take (``encoding.contentType``);
  ``?collection=`` names the served collections.
- Reads take no key unless ``require_key_for_reads`` (an empty security requirement).
- ``POST /v1/items`` links its answer's ``id`` to the item routes (get, image, patch, delete, more like
  this), which stateful tools follow.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from service.schemas import LIMITS_KEY
from service.settings import Settings

IMAGE_TYPES = "image/png, image/jpeg, image/gif, image/webp, application/octet-stream"


def limit_values(settings: Settings, dims: list[int]) -> dict[str, int]:
    """What each limit name stands for: a numeric setting, ``dim``, or a size derived from the settings."""
    values = {name: value for name, value in settings.model_dump().items()
              if isinstance(value, int) and not isinstance(value, bool)}
    values["max_base64_chars"] = 4 * ((settings.max_upload_bytes + 2) // 3)
    if dims:
        values["dim_min"], values["dim_max"] = min(dims), max(dims)
    return values


def fill_limits(node: Any, values: dict[str, int]) -> None:
    """Replace every limits marker under ``node`` by the keywords it names (in place)."""
    if isinstance(node, dict):
        marker = node.pop(LIMITS_KEY, None)
        if marker:
            for keyword, name in marker.items():
                if name == "dim":
                    name = "dim_max" if keyword.startswith("max") else "dim_min"
                if name in values:
                    node[keyword] = values[name]
        for child in node.values():
            fill_limits(child, values)
    elif isinstance(node, list):
        for child in node:
            fill_limits(child, values)


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def _operations(document: dict[str, Any]):
    for path in document.get("paths", {}).values():
        yield from path.values()


def describe_form_parts(document: dict[str, Any]) -> None:
    """Multipart bodies: image parts say which types they take; no part is "null" (a form has no null:
    a part left out is the default)."""
    for operation in _operations(document):
        form = (operation.get("requestBody") or {}).get("content", {}).get("multipart/form-data")
        if not form:
            continue
        props = _resolve(document, form.get("schema", {})).get("properties", {})
        for prop in props.values():
            options = [o for o in prop.get("anyOf", ()) if o.get("type") != "null"]
            if "anyOf" in prop and len(options) == 1:
                del prop["anyOf"]
                prop.update({**options[0], **prop})  # the field's own keywords (its limits) win
        files = {name: {"contentType": IMAGE_TYPES} for name, prop in props.items()
                 if prop.get("format") == "binary" or prop.get("contentMediaType") == "application/octet-stream"}
        if files:
            form["encoding"] = {**form.get("encoding", {}), **files}


def enumerate_collections(document: dict[str, Any], names: list[str]) -> None:
    """``?collection=`` takes the names of the served collections only."""
    for operation in _operations(document):
        for param in operation.get("parameters", ()):
            if param.get("name") == "collection" and param.get("in") == "query":
                param["schema"] = {"type": "string", "enum": names, "description": "a served collection"}


def allow_anonymous_reads(document: dict[str, Any], settings: Settings) -> None:
    """Operations that need only the read scope take no key at all unless ``require_key_for_reads``."""
    if settings.require_key_for_reads:
        return
    for operation in _operations(document):
        security = operation.get("security")
        if security and all(scopes == ["read"] for requirement in security for scopes in requirement.values()):
            operation["security"] = [{}, *security]


def link_created_items(document: dict[str, Any]) -> None:
    paths = document.get("paths", {})
    create = paths.get("/v1/items", {}).get("post")
    item = paths.get("/v1/items/{item_id}", {})
    if not create or not item:
        return
    by_id = {"item_id": "$response.body#/id"}
    links = {f"{method.capitalize()}Item": {"operationId": item[method]["operationId"], "parameters": by_id}
             for method in ("get", "patch", "delete") if method in item}
    image = paths.get("/v1/items/{item_id}/image", {}).get("get")
    if image:
        links["GetItemImage"] = {"operationId": image["operationId"], "parameters": by_id}
    similar = paths.get("/v1/search/similar", {}).get("post")
    if similar:
        links["MoreLikeItem"] = {"operationId": similar["operationId"], "requestBody": {"id": "$response.body#/id"}}
    for status in ("200", "201"):
        response = create.get("responses", {}).get(status)
        if response is not None:
            response["links"] = links


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the document above at ``/openapi.json`` (built once, when first asked for after start-up)."""
    built: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal built
        if built is not None:
            return built
        document = copy.deepcopy(FastAPI.openapi(app))  # FastAPI's own, which it caches as it is
        served = getattr(app.state, "collections", None) or {}
        dims = sorted({res.encoder.dim for res in served.values()})
        if not dims and app.state.resources is not None:
            dims = [app.state.resources.encoder.dim]
        fill_limits(document, limit_values(settings, dims))
        describe_form_parts(document)
        if served:
            enumerate_collections(document, sorted(served))
        allow_anonymous_reads(document, settings)
        link_created_items(document)
        if dims:  # before start-up the encoder's dim is unknown: build again next time
            built = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
