"""``GET /healthz`` (liveness: what is loaded) and ``GET /readyz`` (readiness: the catalog answers)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from service.deps import ResourcesDep
from service.errors import ApiError
from service.schemas import ErrorResponse, Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness and what is being served")
async def healthz(res: ResourcesDep) -> Health:
    version = res.version
    return Health(
        status="ok", index_version=version.name, count=version.count,
        encoder_fingerprint=res.encoder.fingerprint, collection=res.settings.collection,
        can_encode_text=res.encoder.can_encode_text,
    )


@router.get("/readyz", response_model=Ready, summary="Readiness: the catalog database answers",
            responses={503: {"model": ErrorResponse, "description": "`unavailable`"}})
async def readyz(res: ResourcesDep) -> Ready:
    try:
        items = await run_in_threadpool(res.catalog.count, res.settings.collection)
    except SQLAlchemyError as exc:
        raise ApiError(503, "unavailable", f"the catalog database does not answer ({type(exc).__name__})") from None
    return Ready(status="ready", catalog_items=items)
