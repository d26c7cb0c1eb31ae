"""``/openapi.json`` describes exactly the routes the app serves."""

from __future__ import annotations

import re

import pytest

from publisher.app import build_app
from publisher.config import PublisherSettings
from publisher.log import KafkaRecordLog
from publisher.memory_store import MemoryStore
from publisher.openapi import openapi_spec

pytestmark = pytest.mark.unit


def _router_routes() -> set[tuple[str, str]]:
    app = build_app(
        PublisherSettings(admin_token="x" * 16), MemoryStore(), KafkaRecordLog("127.0.0.1:1", "t")
    )
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource is not None else ""
        # aiohttp's {name:regex} → OpenAPI's {name}
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)
        out.add((route.method.lower(), path))
    return out


def test_every_route_is_documented_and_nothing_else() -> None:
    spec = openapi_spec()
    documented = {
        (method, path)
        for path, ops in spec["paths"].items()
        for method in ops
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert _router_routes() == documented


def test_every_path_parameter_is_declared() -> None:
    for path, ops in openapi_spec()["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for op in ops.values():
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == names, (path, declared)
