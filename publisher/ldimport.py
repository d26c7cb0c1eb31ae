"""Reading LaunchDarkly's own exports into flagstream items (``flagstream admin import
launchdarkly``). Pure: files in, items and notes out; the CLI sends them as bulk requests.

Two sources, the two ways LaunchDarkly hands out a project's flags:

- **A Relay Proxy offline-mode archive** (``.tar.gz`` / ``.tgz`` / ``.tar``): per environment
  ``{envId}.json`` (``{"env": {envID, envKey, envName, projKey, projName, ...}, "dataId"}``)
  and ``{envId}-data.json`` (``{"flags": {key: flag}, "segments": {key: segment}}``, already
  the SDK data model flagstream stores), plus ``checksum.md5`` (MD5 over those files in path
  order; a mismatch is refused, as the Relay Proxy refuses it).
- **The REST API's export**: the flags list (``GET /api/v2/flags/{project}?summary=0``,
  ``{"items": [...]}``), where each flag holds its variations once and one section per
  environment under ``environments`` (on, salt, targets, contextTargets, rules, fallthrough,
  offVariation, prerequisites, ...), and per environment the segments list
  (``GET /api/v2/segments/{project}/{env}``). Each environment section is mapped to one
  flagstream flag: variation values from the flag, rules' ``_id`` to ``id``, rollouts'
  ``_untracked`` to ``untracked``; REST-only fields (``_links``, ``_site``, ``sel``,
  ``lastModified``, rule descriptions...) are dropped.

Rules:

1. **Keys, variations, rules, targets, segments and prerequisites are kept as they are**;
   versions are not (the publisher numbers its own versions).
2. **What cannot be carried over is reported, never silently dropped**: deleted or archived
   items (skipped), big (unbounded) segments (imported; their members live in LaunchDarkly's
   big-segment store, so they match nobody, as in an SDK without that store), experiment
   allocations (imported as plain rollouts), REST segments without ``salt`` (weighted
   segment rules then bucket with an empty salt), and items the validator refuses (skipped,
   with the reason).
3. **Deterministic**: the same files give the same items, so a second import changes
   nothing (the CLI sends every item with ``skipUnchanged``).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from protocol.errors import ValidationError
from protocol.model import validate_flag, validate_segment

__all__ = [
    "LdEnvironment",
    "LdImport",
    "SourceError",
    "flag_from_rest",
    "is_archive",
    "load_json_file",
    "read_relay_archive",
    "read_rest_export",
    "segment_from_rest",
]

_MAX_MEMBER_BYTES: Final = 200 * 1024 * 1024  # like the Relay Proxy: no decompression bombs


class SourceError(Exception):
    """The source cannot be read at all (the message says why and what to do)."""


@dataclass
class LdEnvironment:
    """One LaunchDarkly environment's items, in flagstream's (= the SDK's) model."""

    project: str
    key: str
    name: str
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"{self.project}/{self.key}"


@dataclass
class LdImport:
    """Everything read from the sources, and what could not be carried over."""

    environments: list[LdEnvironment]
    notes: list[str] = field(default_factory=list)


# --- items: the SDK model, validated -------------------------------------------------------


def _keep_item(kind: str, raw: Any, env: LdEnvironment, notes: list[str]) -> dict[str, Any] | None:
    """The item as flagstream stores it (no version), or None with a note why not."""
    where = f"{env.source}: {kind} {raw.get('key')!r}" if isinstance(raw, dict) else env.source
    if not isinstance(raw, dict):
        notes.append(f"{where}: not a JSON object, skipped")
        return None
    if raw.get("deleted"):
        notes.append(f"{where}: deleted in LaunchDarkly, skipped")
        return None
    item = {k: v for k, v in raw.items() if k != "version"}
    try:
        item = (validate_flag if kind == "flag" else validate_segment)(item)
    except ValidationError as exc:
        notes.append(f"{where}: invalid, skipped ({exc})")
        return None
    item.pop("version", None)
    if kind == "segment" and item.get("unbounded"):
        notes.append(
            f"{where}: a big (unbounded) segment; its members are in LaunchDarkly's big-segment "
            "store, not in the export, so it matches no context here"
        )
    return item


def _add_items(
    env: LdEnvironment, flags: Iterable[Any], segments: Iterable[Any], notes: list[str]
) -> None:
    for raw in segments:
        item = _keep_item("segment", raw, env, notes)
        if item is not None:
            env.segments[item["key"]] = item
    for raw in flags:
        item = _keep_item("flag", raw, env, notes)
        if item is not None:
            env.flags[item["key"]] = item


# --- the Relay Proxy offline archive -------------------------------------------------------


def read_relay_archive(path: Path) -> LdImport:
    """Read a Relay Proxy offline-mode archive (see the module docstring)."""
    files = _archive_files(path)
    meta_names = sorted(n for n in files if n.endswith(".json") and not n.endswith("-data.json"))
    if not meta_names:
        raise SourceError(
            f"{path} has no environment files ({{envId}}.json): not a Relay Proxy archive"
        )
    if "checksum.md5" not in files:
        raise SourceError(f"{path} has no checksum.md5: not a complete Relay Proxy archive")
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(n for m in meta_names for n in (m, m[:-5] + "-data.json")):
        if name not in files:
            raise SourceError(f"{path}: {name} is missing")
        digest.update(files[name])
    if digest.digest() != files["checksum.md5"]:
        raise SourceError(f"{path}: checksum.md5 does not match its files (damaged archive?)")
    notes: list[str] = []
    environments = []
    for name in meta_names:
        meta = _json(files[name], f"{path}:{name}")
        rep = meta.get("env") if isinstance(meta, dict) else None
        if not isinstance(rep, dict) or not isinstance(rep.get("envKey"), str):
            raise SourceError(f"{path}:{name}: no env.envKey: not a Relay Proxy environment")
        env = LdEnvironment(
            project=str(rep.get("projKey") or "default"),
            key=rep["envKey"],
            name=str(rep.get("envName") or rep["envKey"]),
        )
        data = _json(files[name[:-5] + "-data.json"], f"{path}:{name[:-5]}-data.json")
        if not isinstance(data, dict):
            raise SourceError(f"{path}:{name[:-5]}-data.json: not a JSON object")
        flags, segments = data.get("flags") or {}, data.get("segments") or {}
        if not isinstance(flags, dict) or not isinstance(segments, dict):
            raise SourceError(f"{path}:{name[:-5]}-data.json: flags/segments must be objects")
        _add_items(env, flags.values(), segments.values(), notes)
        environments.append(env)
    return LdImport(environments, notes)


def _archive_files(path: Path) -> dict[str, bytes]:
    """Top-level regular files of a tar or tar.gz archive, by base name."""
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed below
    except (OSError, tarfile.TarError) as exc:
        raise SourceError(f"cannot read {path} as a .tar.gz or .tar archive: {exc}") from exc
    files: dict[str, bytes] = {}
    with tar:
        for member in tar.getmembers():
            if not member.isreg():
                continue
            if member.size > _MAX_MEMBER_BYTES:
                raise SourceError(f"{path}: {member.name} is larger than 200 MB")
            stream = tar.extractfile(member)
            if stream is not None:
                files[Path(member.name).name] = stream.read()
    return files


def _json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise SourceError(f"{where} is not valid JSON: {exc}") from exc


# --- the REST API export -------------------------------------------------------------------


def read_rest_export(flags_doc: Any, segments_docs: Mapping[str, Any]) -> LdImport:
    """Map the REST flags list and the per-environment segment lists (env key -> document)."""
    flags = _items(flags_doc, "flags")
    notes: list[str] = []
    project = _project(flags)
    env_keys: list[str] = []
    for flag in flags:
        for key in (flag.get("environments") or {}) if isinstance(flag, dict) else ():
            if key not in env_keys:
                env_keys.append(key)
    for key in segments_docs:
        if key not in env_keys:
            env_keys.append(key)
    environments = []
    for env_key in env_keys:
        env = LdEnvironment(project=project, key=env_key, name=env_key)
        env_flags = []
        for flag in flags:
            mapped = flag_from_rest(flag, env_key, notes)
            if mapped is not None:
                env_flags.append(mapped)
        env_segments = []
        for segment in _items(segments_docs.get(env_key, {"items": []}), f"segments of {env_key}"):
            env_segments.append(segment_from_rest(segment, f"{project}/{env_key}", notes))
        _add_items(env, env_flags, env_segments, notes)
        environments.append(env)
    return LdImport(environments, notes)


def _items(doc: Any, what: str) -> list[Any]:
    items = doc.get("items") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise SourceError(f'the {what} document must be a list or {{"items": [...]}}')
    return items


def _project(flags: list[Any]) -> str:
    for flag in flags:
        href = ((flag.get("_links") or {}).get("parent") or {}).get("href", "")
        if isinstance(href, str) and href.startswith("/api/v2/flags/"):
            return href.removeprefix("/api/v2/flags/").split("/")[0] or "default"
    return "default"


_FLAG_ENV_FIELDS: Final = (
    "on",
    "salt",
    "offVariation",
    "trackEvents",
    "trackEventsFallthrough",
    "debugEventsUntilDate",
)


def flag_from_rest(flag: Any, env_key: str, notes: list[str]) -> dict[str, Any] | None:
    """One environment's section of a REST flag as an SDK-model flag (None: skipped)."""
    if not isinstance(flag, dict):
        notes.append(f"{env_key}: a flag that is not a JSON object, skipped")
        return None
    key = flag.get("key")
    section = (flag.get("environments") or {}).get(env_key)
    if not isinstance(section, dict):
        return None  # the flag has no configuration in this environment
    where = f"{env_key}: flag {key!r}"
    if flag.get("archived") or section.get("archived"):
        notes.append(f"{where}: archived in LaunchDarkly, skipped")
        return None
    out: dict[str, Any] = {
        "key": key,
        "variations": [
            v.get("value") if isinstance(v, dict) else v for v in flag.get("variations") or []
        ],
    }
    for name in _FLAG_ENV_FIELDS:
        if section.get(name) is not None:
            out[name] = section[name]
    out["targets"] = [_target(t) for t in section.get("targets") or []]
    out["contextTargets"] = [_target(t) for t in section.get("contextTargets") or []]
    out["rules"] = [_flag_rule(r, where, notes) for r in section.get("rules") or []]
    if section.get("fallthrough") is not None:
        out["fallthrough"] = _vor(section["fallthrough"], f"{where} fallthrough", notes)
    out["prerequisites"] = [
        {"key": p.get("key"), "variation": p.get("variation")}
        for p in section.get("prerequisites") or []
        if isinstance(p, dict)
    ]
    csa = flag.get("clientSideAvailability")
    if isinstance(csa, dict):
        out["clientSideAvailability"] = {
            "usingMobileKey": bool(csa.get("usingMobileKey")),
            "usingEnvironmentId": bool(csa.get("usingEnvironmentId")),
        }
    elif flag.get("includeInSnippet") is not None:  # the older field for the same thing
        out["clientSideAvailability"] = {
            "usingMobileKey": False,
            "usingEnvironmentId": bool(flag["includeInSnippet"]),
        }
    return out


def _target(target: Any) -> Any:
    if not isinstance(target, dict):
        return target
    out = {"values": target.get("values"), "variation": target.get("variation")}
    if target.get("contextKind") is not None:
        out["contextKind"] = target["contextKind"]
    return out


def _clause(clause: Any) -> Any:
    if not isinstance(clause, dict):
        return clause
    out = {
        "attribute": clause.get("attribute"),
        "op": clause.get("op"),
        "values": clause.get("values"),
        "negate": bool(clause.get("negate")),
    }
    if clause.get("contextKind") is not None:
        out["contextKind"] = clause["contextKind"]
    return out


def _vor(value: Any, where: str, notes: list[str]) -> Any:
    """A variation-or-rollout (fallthrough or rule part) in the SDK's shape."""
    if not isinstance(value, dict):
        return value
    if value.get("variation") is not None:
        return {"variation": value["variation"]}
    rollout = value.get("rollout")
    if not isinstance(rollout, dict):
        return {}
    out: dict[str, Any] = {
        "variations": [
            {
                "variation": wv.get("variation"),
                "weight": wv.get("weight"),
                **({"untracked": True} if wv.get("_untracked") else {}),
            }
            for wv in rollout.get("variations") or []
            if isinstance(wv, dict)
        ]
    }
    for name in ("bucketBy", "contextKind", "seed"):
        if rollout.get(name) is not None:
            out[name] = rollout[name]
    if rollout.get("experimentAllocation") is not None:
        notes.append(f"{where}: an experiment allocation, imported as a plain rollout")
    return {"rollout": out}


def _flag_rule(rule: Any, where: str, notes: list[str]) -> Any:
    if not isinstance(rule, dict):
        return rule
    out: dict[str, Any] = {}
    if rule.get("_id") is not None:
        out["id"] = rule["_id"]
    out["clauses"] = [_clause(c) for c in rule.get("clauses") or []]
    out.update(_vor(rule, f"{where} rule {rule.get('_id')!r}", notes))
    out["trackEvents"] = bool(rule.get("trackEvents"))
    return out


_SEGMENT_FIELDS: Final = (
    "included",
    "excluded",
    "includedContexts",
    "excludedContexts",
    "salt",
    "unbounded",
    "unboundedContextKind",
    "generation",
    "deleted",
)


def segment_from_rest(segment: Any, where: str, notes: list[str]) -> Any:
    """A REST segment as an SDK-model segment (validation happens after)."""
    if not isinstance(segment, dict):
        return segment
    out: dict[str, Any] = {"key": segment.get("key")}
    for name in _SEGMENT_FIELDS:
        if segment.get(name) is not None:
            out[name] = segment[name]
    rules = []
    for rule in segment.get("rules") or []:
        if not isinstance(rule, dict):
            rules.append(rule)
            continue
        mapped: dict[str, Any] = {"clauses": [_clause(c) for c in rule.get("clauses") or []]}
        if rule.get("_id") is not None:
            mapped["id"] = rule["_id"]
        for name in ("weight", "bucketBy", "rolloutContextKind"):
            if rule.get(name) is not None:
                mapped[name] = rule[name]
        rules.append(mapped)
    out["rules"] = rules
    if "salt" not in out and any(isinstance(r, dict) and "weight" in r for r in rules):
        notes.append(
            f"{where}: segment {out['key']!r} has weighted rules but the REST export has no "
            "salt: those rules bucket contexts differently from LaunchDarkly"
        )
    return out


def load_json_file(path: Path) -> Any:
    """A JSON document from a file, or SourceError naming the file."""
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SourceError(f"{path} is not valid JSON: {exc}") from exc


def is_archive(path: Path) -> bool:
    """True for a tar/tar.gz file (by content, whatever its name)."""
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False
