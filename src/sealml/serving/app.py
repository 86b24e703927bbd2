"""The HTTP API of ``sealml serve`` (FastAPI behind one pure ASGI middleware).

Every handler is ``async def`` and does its checks inline: per-address limit, credentials
(API key or JWT), scope, model, per-principal limit, freeze, then validation against the
model's schema, inference, output policy, optional response signature.
"""

from __future__ import annotations

import asyncio
import random
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, StringConstraints, ValidationError

from ..errors import SealmlError, UsageError
from ..ledger import EventDraft
from ..models.registry import model_resource
from .apikeys import KeyRejectedError
from .middleware import RequestGuard
from .model import ServedModel
from .recorder import INVALID, RATE_LIMITED, prediction_row
from .runtime import Runtime
from .signatures import HEADER, REQUEST_HEADER, sign_body
from .tokens import TokenRejectedError

INLINE_BATCH = 64  # larger batches run in a worker thread, so the time limit applies
JSON = "application/json"


class RefusedError(Exception):
    """A request answered with an error status and a short reason."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.detail, self.headers = status, detail, headers or {}


class ErrorBody(BaseModel):
    detail: Any


class PredictResponse(BaseModel):
    request_id: str
    model: str
    version: int
    predictions: list[Any]
    classes: list[Any] | None = None
    probabilities: list[list[float]] | None = None


class ExplainResponse(BaseModel):
    request_id: str
    model: str
    version: int
    predictions: list[Any]
    contributions: list[dict[str, float]]


class FreezeRequest(BaseModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class ModelInfo(BaseModel):
    model: str
    ref: str
    version: int | None
    frozen: bool
    inputs: list[str] | None = None
    output: str


_ERRORS = {
    401: "missing or invalid credentials",
    403: "not allowed",
    413: "request body too large",
    429: "rate limited",
    503: "model unavailable or frozen",
    504: "request took too long",
}


def _responses(*extra: int) -> dict[int | str, dict[str, Any]]:
    codes = [401, 403, 413, 429, 504, *extra]
    return {code: {"model": ErrorBody, "description": _ERRORS.get(code, "")} for code in codes}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


class Handlers:
    """The request handlers, bound to one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.name = runtime.target.name

    # -- the checks every protected request passes ----------------------------------------

    def _deny(self, who: str, action: str, reason: str, status: int, detail: str) -> RefusedError:
        self.runtime.metrics.denials.labels(reason).inc()
        self.runtime.recorder.denial(who, action, model_resource(self.name), reason)
        headers = {"www-authenticate": "Bearer"} if status == 401 else None
        return RefusedError(status, detail, headers)

    async def guard(self, request: Request, scope: str, action: str) -> str:
        """The principal making *request*, once it passed every check; RefusedError otherwise."""
        runtime = self.runtime
        address = request.client.host if request.client else "-"
        wait = await runtime.limiter.take(
            f"addr:{address}", self.settings.address_rate, self.settings.address_burst
        )
        if wait:
            runtime.metrics.rate_limited.labels("address").inc()
            runtime.recorder.denial(f"address:{address}", action, model_resource(self.name),
                                    RATE_LIMITED)  # fmt: skip
            raise RefusedError(429, "rate limited", {"retry-after": str(max(1, round(wait)))})
        presented = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, credential = authorization.partition(" ")
            if presented is not None or scheme.lower() != "bearer" or not credential.strip():
                # Two credentials, or one we cannot read: never pick one and ignore the other.
                reason = "ambiguous credentials" if presented else "unreadable credentials"
                raise self._deny(f"address:{address}", action, reason, 401, _ERRORS[401])
            presented = credential.strip()
        if not presented:
            raise self._deny(f"address:{address}", action, "no credentials", 401, _ERRORS[401])
        scopes: tuple[str, ...]
        if presented.startswith("sml_"):
            try:
                key = runtime.keyring.authenticate(presented)
            except KeyRejectedError as error:
                # Attribute to a key only one that exists (ids are the caller's to invent).
                known = error.key_id is not None and error.reason not in ("unknown", "malformed")
                who = f"apikey:{error.key_id}" if known else f"address:{address}"
                raise self._deny(
                    who, action, f"api key {error.reason}", 401, _ERRORS[401]
                ) from None
            principal, scopes, allowed = key.principal, key.scopes, key.allows_model(self.name)
        elif runtime.tokens is not None:
            try:
                claims = runtime.tokens.verify(presented)
            except TokenRejectedError as error:
                raise self._deny(
                    f"address:{address}", action, f"jwt {error.reason}", 401, _ERRORS[401]
                ) from None
            principal, scopes, allowed = (
                claims.principal,
                claims.scopes,
                claims.allows_model(self.name),
            )
        else:
            raise self._deny(f"address:{address}", action, "jwt not configured", 401, _ERRORS[401])
        request.state.principal = principal
        if scope not in scopes:
            raise self._deny(principal, action, f"lacks scope {scope}", 403, f"needs scope {scope}")
        if not allowed:
            raise self._deny(principal, action, "other model", 403, "not allowed for this model")
        wait = await runtime.limiter.take(
            f"principal:{principal}", runtime.key_rate(principal), self.settings.key_burst
        )
        if wait:
            runtime.metrics.rate_limited.labels("principal").inc()
            runtime.recorder.denial(principal, action, model_resource(self.name), RATE_LIMITED)
            raise RefusedError(429, "rate limited", {"retry-after": str(max(1, round(wait)))})
        return principal

    def serving(self) -> ServedModel:
        if self.runtime.frozen is not None:
            raise RefusedError(503, f"model {self.name} is frozen under an incident")
        served = self.runtime.current
        if served is None:
            raise RefusedError(503, f"model {self.name} has no servable version")
        return served

    async def _parse(
        self, request: Request, model: type[BaseModel], principal: str, action: str
    ) -> Any:
        """The request body validated against *model*; a 422 naming the field otherwise."""
        body = await request.body()
        try:
            parsed = model.model_validate_json(body)
        except ValidationError as error:
            self.runtime.metrics.validation_failures.inc()
            self.runtime.recorder.denial(principal, action, model_resource(self.name), INVALID)
            detail = [
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in error.errors(include_url=False, include_input=False, include_context=False)
            ]
            raise RefusedError(422, detail) from None
        return parsed

    async def _run(self, function: Any, *args: Any) -> Any:
        if len(args[0]) <= INLINE_BATCH:
            return function(*args)
        return await asyncio.to_thread(function, *args)

    def _respond(self, request: Request, payload: dict[str, Any]) -> Response:
        body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = None
        if request.headers.get(REQUEST_HEADER):
            headers = {HEADER: sign_body(self.runtime.signing_key, body)}
        return Response(body, media_type=JSON, headers=headers)

    # -- endpoints ------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        principal = await self.guard(request, "predict", "serve.predict")
        served = self.serving()
        request.state.version = served.version
        parsed = await self._parse(request, served.schema.request, principal, "serve.predict")
        instances: list[Any] = parsed.instances
        numeric = served.numeric(instances)
        inference = await self._run(served.infer, served.inputs(instances, numeric))
        ood = served.ood.scores(numeric)
        probabilities = (
            inference.probabilities.tolist() if inference.probabilities is not None else None
        )
        runtime = self.runtime
        metrics = runtime.metrics
        metrics.instances.inc(len(instances))
        threshold = self.settings.ood_threshold
        far = sum(1 for z in ood if z > threshold)
        if far:
            metrics.ood.inc(far)
        alert = runtime.detector.observe(principal, instances, numeric, probabilities)
        if alert is not None:
            runtime.extraction_alert(alert)
        request_id = request.state.request_id
        payload: dict[str, Any] = {
            "request_id": request_id,
            "model": self.name,
            "version": served.version,
            "predictions": inference.labels,
        }
        if self.settings.output == "probability" and probabilities is not None:
            digits = self.settings.round_digits
            payload["classes"] = served.classes
            payload["probabilities"] = [[round(p, digits) for p in row] for row in probabilities]
        self._log(request_id, principal, served, instances, inference.labels, probabilities, ood)
        return self._respond(request, payload)

    def _log(
        self,
        request_id: str,
        principal: str,
        served: ServedModel,
        instances: list[Any],
        labels: list[Any],
        probabilities: list[list[float]] | None,
        ood: list[float],
    ) -> None:
        recorder = self.runtime.recorder
        if random.random() < self.settings.log_sample:  # noqa: S311 (sampling, not security)
            scores: list[float | None] = (
                [max(row) for row in probabilities]
                if probabilities is not None
                else [None] * len(instances)
            )
            recorder.predictions(
                [
                    prediction_row(
                        request_id,
                        principal,
                        served.version,
                        i if isinstance(i, dict) else {f"x{n}": v for n, v in enumerate(i)},
                        label,
                        score,
                        z,
                    )
                    for i, label, score, z in zip(instances, labels, scores, ood, strict=True)
                ]
            )
        if random.random() < self.settings.ledger_sample:  # noqa: S311
            recorder.event(
                EventDraft(
                    principal,
                    "serve.predict",
                    model_resource(self.name),
                    "ok",
                    {"version": served.version, "instances": len(instances), "request": request_id},
                )
            )

    async def explain(self, request: Request) -> Response:
        principal = await self.guard(request, "explain", "serve.explain")
        served = self.serving()
        request.state.version = served.version
        parsed = await self._parse(request, served.schema.explain, principal, "serve.explain")
        instances: list[Any] = parsed.instances
        frame = served.schema.frame(instances)
        try:
            contributions = await self._run(served.explain, frame)
            labels = served.infer(frame).labels
        except ValueError as error:
            raise RefusedError(503, str(error)) from None
        digits = self.settings.round_digits
        self.runtime.recorder.event(
            EventDraft(
                principal,
                "serve.explain",
                model_resource(self.name),
                "ok",
                {"version": served.version, "instances": len(instances)},
            )
        )
        return self._respond(
            request,
            {
                "request_id": request.state.request_id,
                "model": self.name,
                "version": served.version,
                "predictions": labels,
                "contributions": [
                    {k: round(v, digits) for k, v in c.items()} for c in contributions
                ],
            },
        )

    async def info(self, request: Request) -> Response:
        await self.guard(request, "predict", "serve.info")
        return _json(self.runtime.describe())

    async def _freeze(self, request: Request, frozen: bool) -> Response:
        action = "serve.freeze" if frozen else "serve.unfreeze"
        principal = await self.guard(request, "admin", action)
        reason = (await self._parse(request, FreezeRequest, principal, action)).reason
        if (self.runtime.frozen is not None) == frozen:
            return _json(self.runtime.describe())
        try:
            await asyncio.to_thread(self.runtime.freeze, reason, frozen, principal)
        except UsageError:
            # Another server or the CLI got there first: the ledger already says so.
            await asyncio.to_thread(self.runtime.poll)
        except SealmlError as error:
            self.runtime.log.write("freeze-failed", error=str(error))
            raise RefusedError(503, "the freeze could not be recorded") from None
        return _json(self.runtime.describe())

    async def freeze(self, request: Request) -> Response:
        return await self._freeze(request, True)

    async def unfreeze(self, request: Request) -> Response:
        return await self._freeze(request, False)

    async def metrics(self, request: Request) -> Response:
        await self.guard(request, "admin", "serve.metrics")
        return Response(self.runtime.metrics.render(), media_type="text/plain; version=0.0.4")

    async def healthz(self) -> Response:
        return _json({"status": "ok"})

    async def readyz(self) -> Response:
        ready = self.runtime.current is not None and self.runtime.frozen is None
        return _json(self.runtime.describe(), 200 if ready else 503)

    async def signing_key(self) -> Response:
        return Response(
            self.runtime.signing_key.public_key.pem(), media_type="application/x-pem-file"
        )


class HotPath:
    """Sends prediction requests straight to their handler and everything else through
    FastAPI. The handler does all its own checks; FastAPI's routing, dependency and
    exception layers cost about a tenth of a small model's request, and the route is
    still declared in FastAPI, so the OpenAPI document describes it."""

    def __init__(self, app: Any, handlers: Handlers, route: Any) -> None:
        self.app, self.handlers, self.route = app, handlers, route
        self.path = route.path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            response = await self.handlers.predict(Request(scope, receive))
        except RefusedError as error:
            response = _json({"detail": error.detail}, error.status, error.headers)
        await response(scope, receive, send)


def create_app(runtime: Runtime) -> Any:
    """The ASGI application serving *runtime*'s model."""
    handlers = Handlers(runtime)
    app = FastAPI(
        title=f"sealml: {runtime.target.name}",
        version="1",
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(RefusedError)
    async def refused(request: Request, error: RefusedError) -> Response:
        return _json({"detail": error.detail}, error.status, error.headers)

    base = f"/v1/models/{runtime.target.name}"
    secured: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    app.add_api_route(
        f"{base}/predict",
        handlers.predict,
        methods=["POST"],
        response_model=PredictResponse,
        responses=_responses(422, 503),
        openapi_extra={"security": secured},
    )
    app.add_api_route(
        f"{base}/explain",
        handlers.explain,
        methods=["POST"],
        response_model=ExplainResponse,
        responses=_responses(422, 503),
        openapi_extra={"security": secured},
    )
    app.add_api_route(
        base,
        handlers.info,
        methods=["GET"],
        response_model=ModelInfo,
        responses=_responses(),
        openapi_extra={"security": secured},
    )
    freeze_body = {
        "required": True,
        "content": {JSON: {"schema": FreezeRequest.model_json_schema()}},
    }
    for path, handler in (
        ("/admin/freeze", handlers.freeze),
        ("/admin/unfreeze", handlers.unfreeze),
    ):
        app.add_api_route(
            path,
            handler,
            methods=["POST"],
            response_model=ModelInfo,
            responses=_responses(422),
            openapi_extra={
                "security": secured,
                "requestBody": freeze_body,
            },
        )
    app.add_api_route(
        "/metrics",
        handlers.metrics,
        methods=["GET"],
        responses=_responses(),
        response_class=Response,
        openapi_extra={"security": secured},
    )
    app.add_api_route("/healthz", handlers.healthz, methods=["GET"])
    app.add_api_route(
        "/readyz",
        handlers.readyz,
        methods=["GET"],
        response_model=ModelInfo,
        responses={503: {"model": ModelInfo, "description": "not ready"}},
    )
    app.add_api_route(
        "/v1/signing-key", handlers.signing_key, methods=["GET"], response_class=Response
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = document.setdefault("components", {})
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        served = runtime.current
        if served is not None:
            for path, model in (
                (f"{base}/predict", served.schema.request),
                (f"{base}/explain", served.schema.explain),
            ):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.setdefault("schemas", {}).update(schema.pop("$defs", {}))
                components["schemas"][model.__name__] = schema
                reference = {"$ref": f"#/components/schemas/{model.__name__}"}
                document["paths"][path]["post"]["requestBody"] = {
                    "required": True,
                    "content": {JSON: {"schema": reference}},
                }
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    predict_route = next(r for r in app.routes if getattr(r, "path", "") == f"{base}/predict")
    return RequestGuard(
        HotPath(app, handlers, predict_route),
        max_body=runtime.settings.max_body_bytes,
        timeout=runtime.settings.timeout_seconds,
        metrics=runtime.metrics,
        log=runtime.log,
    )
