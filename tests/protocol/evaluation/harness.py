"""Loading LaunchDarkly's SDK test harness data files, as the harness itself does.

A data file (``data/launchdarkly-sdk-test-harness/*/*.yml``, format in its ``data_files.md``)
may declare ``constants`` and ``parameters`` (a list of objects, or a list of lists of
objects whose cartesian product is taken, the first list varying fastest). For every
parameter set the *text* of the file is rewritten before it is parsed: constants, then the
parameters, then constants again; ``"<NAME>"`` (quoted) becomes the value's JSON, any other
``<NAME>`` the value's text (a string's contents, else its JSON). An unknown ``<NAME>`` is
left as is. YAML is read as YAML 1.2 (``on:`` is a key, only ``true``/``false`` are
booleans), numbers as Go's JSON writes them (a whole float is an integer).

What a standalone runner adds (the harness's test service does it implicitly), per the
conformance README: an item's ``key`` is its map key and its ``version`` defaults to 1.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).parent / "data" / "launchdarkly-sdk-test-harness"


_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when PyYAML has it


class _Yaml12Loader(_BASE):  # type: ignore[valid-type,misc]
    """SafeLoader with YAML 1.2 booleans: only true/false; ``on``/``off``/``yes`` are strings."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _BASE.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)


def _go_json(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_go_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _go_json(v) for k, v in value.items()}
    return value


def _replace(text: str, substitutions: dict[str, Any]) -> str:
    for name, value in substitutions.items():
        typed = json.dumps(_go_json(value), separators=(",", ":"), ensure_ascii=False)
        text = text.replace(f'"<{name}>"', typed)
        text = text.replace(f"<{name}>", value if isinstance(value, str) else typed)
    return text


def _permutations(parameters: list[Any]) -> list[dict[str, Any]]:
    if not parameters:
        return []
    if isinstance(parameters[0], dict):
        return list(parameters)
    out = []
    indices = [0] * len(parameters)
    while True:
        merged: dict[str, Any] = {}
        for i, options in enumerate(parameters):
            merged.update(options[indices[i]])
        out.append(merged)
        position = 0
        while position < len(parameters):
            indices[position] += 1
            if indices[position] < len(parameters[position]):
                break
            indices[position] = 0
            position += 1
        if position == len(parameters):
            return out


def expand(text: str) -> list[dict[str, Any]]:
    """Every suite a data file's text stands for, parsed."""
    head = load_yaml(text)
    constants = head.get("constants") or {}
    parameter_sets = _permutations(head.get("parameters") or [])
    if not constants and not parameter_sets:
        return [head]
    if not parameter_sets:
        return [load_yaml(_replace(text, constants))]
    return [
        load_yaml(_replace(_replace(_replace(text, constants), params), constants))
        for params in parameter_sets
    ]


@dataclass(frozen=True)
class Case:
    """One evaluation of one suite."""

    file: str
    suite: str
    name: str
    flags: dict[str, Any]
    segments: dict[str, Any]
    flag_key: str
    context: Any
    value_type: str | None
    default: Any
    expect: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}: {self.suite} / {self.name}"


def _items(items: dict[str, Any] | None) -> dict[str, Any]:
    out = {}
    for key, item in (items or {}).items():
        item = dict(item)
        item["key"] = key
        item.setdefault("version", 1)
        out[key] = item
    return out


@functools.cache
def suites(directory: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, suite) of every suite in ``directory``, in file order (parsed once)."""
    return tuple(
        (path.name, suite)
        for path in sorted((DATA / directory).glob("*.yml"))
        for suite in expand(path.read_text())
    )


def server_side_cases() -> list[Case]:
    cases = []
    for file, suite in suites("server-side-eval"):
        data = suite.get("sdkData") or {}
        flags, segments = _items(data.get("flags")), _items(data.get("segments"))
        for i, evaluation in enumerate(suite["evaluations"]):
            cases.append(
                Case(
                    file,
                    suite["name"],
                    evaluation.get("name") or f"#{i}",
                    flags,
                    segments,
                    evaluation["flagKey"],
                    evaluation.get("context", evaluation.get("user")),
                    evaluation.get("valueType"),
                    evaluation.get("default"),
                    evaluation["expect"],
                )
            )
    return cases
