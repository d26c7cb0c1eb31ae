"""Validation of OFREP responses against the OFREP OpenAPI spec (ofrep_spec/, see ORIGIN.md).

Every response a test of the OFREP routes receives goes through ``OFREP.check_response``:
the status must be one the spec declares for the operation, the body must be empty where
the spec declares no content and valid JSON of the declared schema otherwise (JSON Schema
2020-12 with format checking, by ``jsonschema``), and the declared headers (``ETag``,
``Retry-After``) must be present and valid. Notice-stream events go through
``check_sse_event`` (``sseEvent`` and ``sseEventData``).

Corrections applied in memory to the spec (``ERRATA``), without which no answer carrying a
value can be valid (``test_ofrep.py`` shows the spec's own example failing the original):
1. ``codeDefaultFlag`` is ``{"type": "object", "properties": {}}``: every object matches it,
   so every answer with a value matches two branches of the ``oneOf`` in
   ``evaluationSuccess``. Its description says it is the answer *without* a ``value``:
   ``not: {required: [value]}`` is added.
2. ``integerFlag`` and ``floatFlag``: JSON Schema counts ``3`` as both an integer and a
   number, so every integer value matches two branches. ``floatFlag``'s value gets
   ``not: {type: integer}`` (a float flag whose value is whole is then an integer flag,
   which is what it is on the wire).

Responses the spec does not declare, and how they are checked: 413 (body too large) against
the operation's 400 schema; 503 (relay not ready) against ``generalErrorResponse``.
Header formats are not asserted: ``Retry-After`` is sent as seconds, which the bulk route's
schema allows and the single-flag route's allows as a ``string`` whose ``format:
date-time`` is an annotation (JSON Schema 2020-12's default; the relay's reasons are in
relay/ofrep.py, rule 3).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_DIR = Path(__file__).resolve().parent / "ofrep_spec"
BASE = "urn:flagstream:ofrep-openapi"

ERRATA: dict[str, dict[str, Any]] = {
    "codeDefaultFlag": {"not": {"required": ["value"]}},
    "floatFlag.value": {"not": {"type": "integer"}},
}

# Statuses the relay may send that the spec does not declare -> the declared one whose
# schema the body must satisfy (None: the components' generalErrorResponse).
UNDECLARED: dict[int, str | None] = {413: "400", 503: None}


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((SPEC_DIR / "openapi.yaml").read_text())
    return spec


def corrected(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with ``ERRATA`` applied (module docstring)."""
    out = copy.deepcopy(dict(spec))
    schemas = out["components"]["schemas"]
    schemas["codeDefaultFlag"].update(ERRATA["codeDefaultFlag"])
    schemas["floatFlag"]["properties"]["value"].update(ERRATA["floatFlag.value"])
    return out


class OfrepSchema:
    """The spec as a JSON-Schema registry; one ``Draft202012Validator`` per component."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(dict(spec), default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)

    def validator(self, ref: str, *, formats: bool = True) -> jsonschema.Draft202012Validator:
        """A validator of the schema at ``ref`` (``#/components/...``) of the spec."""
        return jsonschema.Draft202012Validator(
            {"$ref": BASE + ref},
            registry=self.registry,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER if formats else None,
        )

    def component(self, name: str) -> jsonschema.Draft202012Validator:
        return self.validator(f"#/components/schemas/{name}")

    def check_response(
        self,
        method: str,
        path: str,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Any:
        """Validate one response of operation ``method path`` (a path of the spec, with
        ``{key}``); returns the parsed JSON body (None when empty). Raises AssertionError or
        ``jsonschema.ValidationError``."""
        operation = self.spec["paths"][path][method.lower()]
        responses = operation["responses"]
        declared_as = str(status)
        if declared_as not in responses:
            assert status in UNDECLARED, f"{method} {path}: status {status} is not in the spec"
            alias = UNDECLARED[status]
            if alias is None:
                return self._json(
                    headers,
                    body,
                    self.validator("#/components/schemas/generalErrorResponse"),
                )
            declared_as = alias
        declared = responses[declared_as]
        escaped = path.replace("~", "~0").replace("/", "~1")
        where = f"#/paths/{escaped}/{method.lower()}/responses/{declared_as}"
        for name, header in declared.get("headers", {}).items():
            value = headers.get(name)
            assert value is not None, f"{method} {path} {status}: header {name} missing"
            self._header(f"{where}/headers/{name}/schema", header["schema"], value)
        content = declared.get("content")
        if content is None:
            assert body == b"", f"{method} {path} {status}: the spec declares no body: {body!r}"
            return None
        assert "application/json" in content
        return self._json(
            headers, body, self.validator(f"{where}/content/application~1json/schema")
        )

    def _json(
        self, headers: Mapping[str, str], body: bytes, validator: jsonschema.Draft202012Validator
    ) -> Any:
        content_type = headers.get("Content-Type", "")
        assert content_type.startswith("application/json"), content_type
        parsed = json.loads(body)
        validator.validate(parsed)
        return parsed

    def _header(self, ref: str, schema: Mapping[str, Any], value: str) -> None:
        validator = self.validator(ref, formats=False)
        if validator.is_valid(value):
            return
        # A header's text is its value; a number schema takes its digits as the number.
        assert value.isdigit(), f"header value {value!r} is not valid against {schema}"
        validator.validate(int(value))

    def check_sse_event(self, data: str, event_id: str | None, event_type: str) -> Any:
        """Validate one notice-stream event; returns its parsed data."""
        event: dict[str, Any] = {"data": data, "event": event_type}
        if event_id is not None:
            event["id"] = event_id
        self.component("sseEvent").validate(event)
        parsed = json.loads(data)
        self.component("sseEventData").validate(parsed)
        return parsed


@cache
def ofrep_schema() -> OfrepSchema:
    """The corrected spec (module docstring)."""
    return OfrepSchema(corrected(load_spec()))
