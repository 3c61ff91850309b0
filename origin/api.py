"""The origin's HTTP API (FastAPI).  ``create_app(settings)`` returns the ASGI app.

Auth: every route except ``/healthz`` needs an API key from ``settings.api_keys`` in
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; none given -> 401, a wrong one ->
403, and so is a key whose scopes do not allow the route (:mod:`origin.scopes`:
``discover`` for ``GET /v1/edges``, ``read`` for every GET, ``mint`` for tokens,
``admin`` for drains, desired state and commands).  Bad bodies or parameters -> 422
with FastAPI's ``detail`` list (field path and message); a body over 64 KiB -> 413
(:mod:`origin.body_limits`).  Unknown rooms/devices -> 404.  The OpenAPI document is
at ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from redis.exceptions import RedisError

from client_sdk.protocol import mint_token
from edge_node.contract import game_listings, secrets_from_env, unpack_listings
from edge_node.redis_io import conn as redis_conn
from edge_node.redis_io import keys as edge_keys
from origin.body_limits import MAX_BODY_BYTES, MAX_JSON_DEPTH, BodyLimits
from origin.downlink import enqueue_command
from origin.effects import to_json
from origin.forecast import ForecastSettings
from origin.forecast_service import ForecastService
from origin.hooks.stats import read_hook_stats
from origin.keys import ShardKeys
from origin.metrics import render_metrics
from origin.scopes import allows, parse_key
from origin.settings import OriginSettings
from origin.supervise import WorkerSupervisor
from origin.view import device_view, edge_list, origin_stats, recent_alerts, room_view

__all__ = ["create_app"]

Ident = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\s/{}]+$")]


class DesiredIn(BaseModel):
    """Desired state: fields to set (merged into the current desired state)."""

    model_config = ConfigDict(extra="forbid")
    state: dict[str, Any] = Field(min_length=1, description="field -> desired value")
    ttl: float | None = Field(None, gt=0, le=86400, description="seconds to wait for "
                              "an offline device (default: the origin's command_ttl)")


class CommandIn(BaseModel):
    """A command for a device."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    args: dict[str, Any] = Field(default_factory=dict)
    ttl: float | None = Field(None, gt=0, le=86400, description="seconds to wait for "
                              "an offline device (default: the origin's command_ttl)")


class TokenIn(BaseModel):
    """A token request (signed with the first EDGE_RELAY_SECRET key)."""

    model_config = ConfigDict(extra="forbid")
    subject: str = Field(min_length=1, max_length=200)
    kind: Literal["service", "device", "player"] = "service"
    rooms: list[str] = Field(default_factory=lambda: ["*"], max_length=100)
    publish: list[str] | None = Field(None, max_length=100)
    ttl: float = Field(3600.0, gt=0, le=30 * 86400)
    metrics: dict[str, tuple[float | None, float | None]] | None = Field(
        None, max_length=100, description="device tokens: metric name -> [min, max] (null: "
        "no bound); samples outside are refused (docs/iot.md)")

    @model_validator(mode="after")
    def _ranges(self) -> TokenIn:
        for name, (lo, hi) in (self.metrics or {}).items():
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"metrics.{name}: min {lo:g} is above max {hi:g}")
        if self.metrics is not None and self.kind != "device":
            raise ValueError("metrics are for device tokens (kind: device)")
        return self


class TokenOut(BaseModel):
    """A signed token and its expiry (Unix seconds)."""

    token: str
    expires: int


def _redis(request: Request) -> aioredis.Redis:
    r: aioredis.Redis = request.app.state.redis
    return r


def _needs(scope: str) -> Any:
    """A dependency: the request's API key must allow ``scope`` (origin/scopes.py)."""
    async def check(request: Request,
                    authorization: Annotated[str | None, Header()] = None,
                    x_api_key: Annotated[str | None, Header()] = None) -> None:
        await _auth(request, authorization, x_api_key, scope)
    return Depends(check)


async def _auth(request: Request, authorization: str | None, x_api_key: str | None,
                scope: str) -> None:
    given = x_api_key
    if given is None and authorization:
        scheme, _, cred = authorization.partition(" ")
        if scheme.lower() != "bearer" or not cred.strip():
            raise HTTPException(401, "Authorization must be 'Bearer API_KEY'",
                                headers={"WWW-Authenticate": "Bearer"})
        given = cred.strip()
    if not given:
        raise HTTPException(401, "API key required: 'Authorization: Bearer KEY' or "
                            "'X-API-Key: KEY'", headers={"WWW-Authenticate": "Bearer"})
    keys: tuple[tuple[bytes, frozenset[str]], ...] = request.app.state.api_keys
    scopes = next((sc for k, sc in keys if hmac.compare_digest(given.encode(), k)), None)
    if scopes is None:
        raise HTTPException(403, "API key not accepted")
    if not allows(scopes, scope):
        raise HTTPException(403, f"this API key may not do that (needs scope {scope!r}; "
                            f"it has {', '.join(sorted(scopes))})")


R = Annotated[aioredis.Redis, Depends(_redis)]


def create_app(settings: OriginSettings, workers: WorkerSupervisor | None = None) -> FastAPI:
    """The API app; it opens its Redis client on startup and closes it on shutdown.
    ``workers``: the worker processes ``origin run`` supervises (shown by ``/healthz``
    and ``/metrics``)."""
    # Demand forecast (ORIGIN_FORECAST_* settings; a bad value raises here, at start).
    forecast_settings = ForecastSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = redis_conn.connect(settings.redis_url, socket_timeout=5.0)
        app.state.forecast = ForecastService(app.state.redis, forecast_settings,
                                             settings.edge_ttl)
        app.state.forecast.start()
        yield
        await app.state.forecast.stop()
        await app.state.redis.aclose()

    app = FastAPI(title="edge-relay origin", version="1", lifespan=lifespan,
                  description="Global view, device shadows and commands, edge discovery.")
    app.state.api_keys = tuple((key.encode(), scopes) for key, scopes in
                               map(parse_key, settings.api_keys))
    app.add_middleware(BodyLimits, max_bytes=MAX_BODY_BYTES, max_depth=MAX_JSON_DEPTH)
    read, discover, mint, admin = ([_needs(s)] for s in ("read", "discover", "mint",
                                                          "admin"))

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        return JSONResponse({"detail": "Redis unavailable"}, status_code=503)

    @app.get("/healthz", tags=["ops"])
    async def healthz(r: R) -> JSONResponse:
        """200 when Redis answers and (``origin run``) every worker runs, else 503
        (``redis_unavailable``, ``workers_missing``: a worker exited and is being
        restarted)."""
        try:
            await r.ping()
        except (RedisError, OSError):
            return JSONResponse({"status": "redis_unavailable"}, status_code=503)
        body: dict[str, Any] = {"status": "ok", "pid": os.getpid()}
        if workers is not None:
            st = workers.status()
            body["workers"] = {"expected": st.expected, "running": st.running,
                               "restarts": st.restarts, "last_exit": st.last_exit}
            if st.running < st.expected:
                body["status"] = "workers_missing"
                return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.get("/metrics", tags=["ops"], dependencies=read, response_class=PlainTextResponse)
    async def metrics(r: R, request: Request) -> PlainTextResponse:
        """Prometheus text: origin totals, lag histogram, backlog and pending per consumer,
        origin functions and webhooks (docs/webhooks.md)."""
        stats = await origin_stats(r, settings)
        hooks = await read_hook_stats(r, settings.shards)
        recs = request.app.state.forecast.latest()
        body = await asyncio.to_thread(render_metrics, stats, recs,
                                       workers.status() if workers is not None else None,
                                       hooks)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/stats", tags=["ops"], dependencies=read)
    async def stats(r: R) -> dict[str, Any]:
        """The origin's counters as JSON (what the demo summary reads)."""
        return await origin_stats(r, settings)

    @app.get("/v1/forecast", tags=["ops"], dependencies=read)
    async def forecast(request: Request) -> dict[str, Any]:
        """Demand forecast per region: observed and forecast connections and messages/s,
        recommended and reactive edge replicas (see docs/deployment.md)."""
        svc: ForecastService = request.app.state.forecast
        return svc.as_dict()

    @app.get("/v1/edges", tags=["discovery"], dependencies=discover)
    async def edges(r: R, lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
                    lon: Annotated[float | None, Query(ge=-180, le=180)] = None
                    ) -> dict[str, Any]:
        """Healthy edges; nearest first when ``lat`` and ``lon`` are given (and edges
        registered a position), else least loaded first."""
        if (lat is None) != (lon is None):
            raise HTTPException(422, "give both lat and lon, or neither")
        return {"edges": await edge_list(r, settings, lat, lon)}

    @app.post("/v1/edges/{edge_id}/drain", tags=["discovery"], dependencies=admin,
              status_code=202)
    async def drain_edge(r: R, edge_id: Ident) -> dict[str, Any]:
        """Ask a live edge to drain (as on SIGTERM: clients handed to neighbours, room
        leases handed over, then the edge exits).  The edge picks the request up within a
        heartbeat (about a second); 404 if no live edge has that id."""
        if not await r.exists(edge_keys.edge_info(edge_id)):
            raise HTTPException(404, f"no live edge {edge_id!r}")
        await r.set(edge_keys.edge_control(edge_id), "drain", ex=60)
        return {"edge": edge_id, "requested": "drain"}

    @app.get("/v1/rooms", tags=["rooms"], dependencies=read)
    async def rooms(r: R, pattern: Annotated[str, Query(min_length=1, max_length=256)] = "*",
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Running game rooms whose name matches ``pattern`` (``*`` wildcards), by name:
        players, max_players, metadata, the owner edge and the state version, as their
        owner edges publish them about once a second (docs/rooms.md)."""
        raw: Any = await r.hgetall(game_listings())
        return {"rooms": unpack_listings(raw, pattern, time.time())[:limit]}

    @app.get("/v1/rooms/{room_id}", tags=["rooms"], dependencies=read)
    async def room(r: R, room_id: Ident,
                   events: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
        """Latest snapshot, recent events and members of a room."""
        v = await room_view(r, settings, room_id, events)
        if v is None:
            raise HTTPException(404, f"room {room_id!r} unknown to the origin")
        return v

    @app.get("/v1/devices/{device_id}", tags=["devices"], dependencies=read)
    async def device(r: R, device_id: Ident,
                     minutes: Annotated[int, Query(ge=1, le=1440)] = 10) -> dict[str, Any]:
        """The device shadow, latest values, per-minute rollups and commands."""
        v = await device_view(r, settings, device_id, minutes)
        if v is None:
            raise HTTPException(404, f"device {device_id!r} unknown to the origin")
        return v

    @app.put("/v1/devices/{device_id}/desired", tags=["devices"], dependencies=admin,
             status_code=202)
    async def desired(r: R, device_id: Ident, body: DesiredIn) -> dict[str, Any]:
        """Merge into the desired state; the change goes to the device as a ``desired``
        command (waits while it is offline, up to ``ttl``)."""
        k = ShardKeys.of(device_id, settings.shards)
        pipe = r.pipeline(transaction=True)
        pipe.hset(k.dev(device_id, "desired"),
                  mapping={f: to_json(v) for f, v in body.state.items()})
        pipe.hincrby(k.dev(device_id, "meta"), "desired_version", 1)
        res: Any = await pipe.execute()
        cmd = await enqueue_command(r, settings, device_id,
                                    {"name": "desired", "args": body.state,
                                     "version": int(res[1])}, body.ttl)
        return {"desired_version": int(res[1]), "command": cmd}

    @app.post("/v1/devices/{device_id}/commands", tags=["devices"], dependencies=admin,
              status_code=202)
    async def command(r: R, device_id: Ident, body: CommandIn) -> dict[str, Any]:
        """Send a command: pushed now if the device is online (status ``sent:EDGE``), else
        kept (``pending``) until it comes online or the ttl passes (``expired``)."""
        return await enqueue_command(r, settings, device_id,
                                     {"name": body.name, "args": body.args}, body.ttl)

    @app.get("/v1/alerts", tags=["devices"], dependencies=read)
    async def alerts(r: R, limit: Annotated[int, Query(ge=1, le=1000)] = 100
                     ) -> dict[str, Any]:
        """Recent alerts from all edges, newest first."""
        return {"alerts": await recent_alerts(r, settings, limit)}

    @app.post("/v1/tokens", tags=["auth"], dependencies=mint, status_code=201)
    async def tokens(body: TokenIn) -> TokenOut:
        """Mint a token that edges accept (HS256 with the first EDGE_RELAY_SECRET key)."""
        secret = secrets_from_env(os.environ.get("EDGE_RELAY_SECRET"))[0]
        now = time.time()
        tok = mint_token(secret, body.subject, body.kind, body.rooms, publish=body.publish,
                         metrics=body.metrics, now=now, ttl=body.ttl)
        return TokenOut(token=tok, expires=int(now + body.ttl))

    return app
