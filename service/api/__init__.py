"""The FastAPI application: `create_app(settings)`; everything heavy is built in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.settings import Settings

logger = logging.getLogger(__name__)


def ensure_admin_token(settings: Settings) -> str:
    """TINYSTORIES_ADMIN_TOKEN, or one generated once and kept (0600) under TINYSTORIES_HOME."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path: Path = settings.admin_token_path
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    logger.warning("generated an admin token; it is stored in %s", path.resolve())
    return token


SOURCES = ("body", "query", "path", "header", "cookie")


def field_of(error: dict[str, Any]) -> str | None:
    """The request field a validation error is about, as the error body names it."""
    loc = list(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        return "body"  # loc holds the character position, not a field
    source = loc.pop(0) if loc and loc[0] in SOURCES else None
    if loc:
        return ".".join(str(p) for p in loc)
    return "body" if source == "body" else None


def create_app(settings: Settings | None = None, *, database_url: str | None = None) -> FastAPI:
    """Build the API; database, pricing and the token are prepared at startup."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from generator.pricing import PriceTable
        from service.db import make_engine, make_sessionmaker, resolve_database_url
        from service.work.provider import SIMULATOR_BANNER, provider_info

        url = database_url or await asyncio.to_thread(resolve_database_url, settings)
        engine = make_engine(url, pool_size=settings.db_pool_size)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.admin_token = ensure_admin_token(settings)
        app.state.pricing = PriceTable.load()
        app.state.provider_info = provider_info(settings)
        if app.state.provider_info["simulator"]:
            logger.warning(SIMULATOR_BANNER)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="TinyStories factory",
        version="1",
        lifespan=lifespan,
        description="Generate TinyStories-style datasets: jobs, stories, progress and cost.",
    )
    app.state.settings = settings
    _install_handlers(app)
    _document_errors(app, settings)

    from service.api import diversity, exports, health, jobs, providers, stories

    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(stories.router)
    app.include_router(exports.router)
    app.include_router(diversity.router)
    app.include_router(providers.router)

    from service.api.metrics import install_metrics
    from service.dashboard import install as install_dashboard

    install_dashboard(app)
    install_metrics(app)

    from service.api.guard import RequestGuard
    from service.dashboard import authorized

    app.add_middleware(
        RequestGuard, max_body_bytes=settings.max_request_bytes, authorized=authorized
    )
    return app


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": field_of(e), "message": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse(
            status_code=422,
            content={
                "error": "invalid request",
                "field": errors[0]["field"] if errors else None,
                "detail": errors,
            },
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        field = detail.get("field") if isinstance(detail, dict) else None
        message = detail.get("message") if isinstance(detail, dict) else detail
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": message, "field": field, "detail": detail},
            headers=getattr(exc, "headers", None),
        )


# Answers any operation can give besides its own: the guard's and the error handlers'.
COMMON_ERRORS = {
    401: "Missing or wrong admin token.",
    413: "Request body over TINYSTORIES_MAX_REQUEST_BYTES.",
    422: "Invalid request: `field` names the input at fault.",
    503: "The database is unavailable; retry after `Retry-After` seconds.",
}


def _document_errors(app: FastAPI, settings: Settings) -> None:
    """Publish the error body the API really sends (not FastAPI's HTTPValidationError), the
    status codes every route can answer, and limits that come from the settings."""
    from fastapi.openapi.utils import get_openapi

    from service.api.schemas import ErrorOut

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorOut"] = ErrorOut.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        error_ref = {"$ref": "#/components/schemas/ErrorOut"}
        for path, methods in schema.get("paths", {}).items():
            for method, operation in methods.items():
                responses = operation.setdefault("responses", {})
                codes = dict(COMMON_ERRORS)
                if path in ("/healthz", "/readyz"):
                    codes = {503: COMMON_ERRORS[503]}
                if "{" in path:
                    codes[404] = "No such resource."
                if any(p.get("name") == "Idempotency-Key" for p in operation.get("parameters", [])):
                    codes[409] = "The Idempotency-Key was used with a different request body."
                if path.startswith("/v1/jobs/{") and method in ("post", "patch"):
                    codes[409] = "Not possible in the job's current status."
                for code, description in codes.items():
                    responses.setdefault(str(code), {"description": description})
                for code, response in responses.items():
                    if code.startswith(("4", "5")):
                        response["content"] = {"application/json": {"schema": error_ref}}
        if "JobCreate" in components:
            _document_job_rules(components["JobCreate"], settings)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_job_rules(job: dict[str, Any], settings: Settings) -> None:
    """What POST /v1/jobs accepts beyond the body's types, from the running configuration:
    priced models, packaged templates, known features, the job size limit, model XOR models.
    A client (or a fuzzer) reading the schema then knows what will be accepted."""
    import re

    from generator.pricing import PriceTable
    from generator.prompts import available_versions
    from vocab import default_vocabulary

    names = sorted(PriceTable.load().models())
    alternatives = [
        re.escape(n[:-1]) + "[^\\x00]*" if n.endswith("*") else re.escape(n) for n in names
    ]
    priced = "^(?:" + "|".join(alternatives) + ")$"
    props = job.setdefault("properties", {})

    def string_branch(prop: dict[str, Any]) -> dict[str, Any]:
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") == "string":
                return branch
        return prop

    for name in ("model", "summary_model"):
        if name in props:
            string_branch(props[name])["pattern"] = priced
    for branch in props.get("models", {}).get("anyOf", []):
        if branch.get("type") == "object":
            branch["propertyNames"] = {"pattern": priced}
            branch["minProperties"] = 1
    for branch in props.get("prices", {}).get("anyOf", []):
        if branch.get("type") == "object":
            branch["propertyNames"] = {"minLength": 1, "maxLength": 200, "pattern": "^[^\\x00]+$"}
    for branch in props.get("template_version", {}).get("anyOf", []):
        if branch.get("type") == "string":
            branch["enum"] = available_versions("story")
            branch.pop("pattern", None)
    features = [f.name for f in default_vocabulary().features]
    for branch in props.get("feature_probs", {}).get("anyOf", []):
        if branch.get("type") == "object":
            branch["propertyNames"] = {"enum": features}
    if "n_stories" in props:
        props["n_stories"]["maximum"] = settings.max_job_stories
    job["not"] = {
        "required": ["model", "models"],
        "properties": {"model": {"type": "string"}, "models": {"type": "object"}},
    }


async def database_ready(app: FastAPI) -> bool:
    """True when the database answers."""
    try:
        async with app.state.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
