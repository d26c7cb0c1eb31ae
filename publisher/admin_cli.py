"""``flagstream admin``: a command-line client for the publisher's admin API.

Reads ``FLAGSTREAM_PUBLISHER_URL`` (default http://127.0.0.1:8031) and
``FLAGSTREAM_ADMIN_TOKEN`` (or ``--url`` / ``--token``). Output is readable text, or the raw
JSON with ``--json``. Exit codes: 0 ok, 1 the API refused the request (its problem detail is
printed), 2 bad usage or input file, 3 the publisher cannot be reached. A write answered 202
(stored, Kafka delivery pending) exits 0 and says so.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from protocol import jsoncodec

__all__ = ["main"]

EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3
DEFAULT_URL = "http://127.0.0.1:8031"


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _q(segment: str) -> str:
    """One URL path segment, percent-encoded (``/``, ``?``, spaces, control characters...)."""
    return urllib.parse.quote(segment, safe="")


def _validate_url(url: str) -> str:
    """The publisher base URL, or a usage error saying what a valid one looks like."""
    hint = f"invalid publisher URL {url!r} (--url / FLAGSTREAM_PUBLISHER_URL): "
    example = f"expected e.g. {DEFAULT_URL}"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise CliError(f"{hint}{exc}; {example}", EXIT_USAGE) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"{hint}{example}", EXIT_USAGE)
    if parts.query or parts.fragment or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise CliError(f"{hint}no query, fragment, spaces or control characters; {example}", 2)
    return url


def _excerpt(raw: bytes, limit: int = 200) -> str:
    text = " ".join(raw.decode(errors="replace").split())
    return text if len(text) <= limit else text[:limit] + "…"


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        if not self.token:
            raise CliError("no admin token: set FLAGSTREAM_ADMIN_TOKEN or pass --token", EXIT_USAGE)
        h = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        h.update(headers or {})
        data = None
        if body is not None:
            data = jsoncodec.dumps(body)
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            detail = None
            try:
                problem = json.loads(raw)
                detail = problem.get("detail") or problem.get("title")
                errors = problem.get("errors")
                if detail and isinstance(errors, list):  # a bulk refusal: every operation
                    detail += "".join(
                        f"\n  operations[{e.get('index')}] {e.get('kind')} {e.get('key')}: "
                        f"{e.get('status')} {e.get('detail')}"
                        for e in errors[:50]
                        if isinstance(e, dict)
                    ) + (f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else "")
            except (ValueError, AttributeError):
                pass
            if not detail:  # not a problem document (e.g. a proxy's page): reason and excerpt
                excerpt = _excerpt(raw)
                detail = f"{exc.reason}" + (f": {excerpt}" if excerpt else "")
            raise CliError(f"{method} {path}: {exc.code} {detail}", EXIT_API) from exc
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
            raise CliError(
                f"cannot reach the publisher at {self.url}: {reason} "
                "(is it running? set FLAGSTREAM_PUBLISHER_URL or --url)",
                EXIT_CONNECT,
            ) from exc
        except (TimeoutError, ConnectionError) as exc:
            raise CliError(
                f"cannot reach the publisher at {self.url}: {exc}", EXIT_CONNECT
            ) from exc
        except (ValueError, http.client.HTTPException) as exc:
            # client-side: an invalid URL or header (InvalidURL is a ValueError), or an answer
            # that is not JSON
            raise CliError(f"{method} {path}: {type(exc).__name__}: {exc}", EXIT_USAGE) from exc


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read the flag field ``on:`` as the
    boolean True (and ``off``/``yes``/``no`` too), silently corrupting a flag file."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _load_file(path: str) -> Any:
    """A flag or segment from a JSON or YAML file (``-`` = stdin)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    try:
        if path.endswith(".json"):
            return json.loads(text)
        return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader subclass: safe
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CliError(f"{path} is not valid JSON or YAML: {first}", EXIT_USAGE) from exc


def _time(ms: int | None) -> str:
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _unwrap(status: int, body: Any) -> tuple[Any, str]:
    """The stored item of a write answer, and a note when delivery is pending (202)."""
    if status == 202 and isinstance(body, dict) and body.get("delivery") == "pending":
        return body[
            "item"
        ], " (stored; Kafka delivery pending, it will be delivered when Kafka is back)"
    return body, ""


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def _envs(value: Any) -> str:
    return "*" if value == "*" else ",".join(value)


def _items_path(kind: str, env: str, key: str | None = None) -> str:
    base = f"/api/v1/environments/{_q(env)}/{kind}s"
    return base if key is None else f"{base}/{_q(key)}"


def run(args: argparse.Namespace, client: Client) -> str | Any:
    """Execute the parsed command; return text to print, or a JSON value for --json."""
    cmd = args.command
    from publisher.governance import cli as governance  # governance commands (imports us)

    if governance.handles(args):
        return governance.run(args, client)
    comment = {"X-Change-Comment": args.comment} if getattr(args, "comment", None) else {}

    if cmd == "env":
        if args.action == "create":
            status, body = client.call(
                "POST",
                "/api/v1/environments",
                {"key": args.key, "name": args.name or args.key},
                comment,
            )
            item, note = _unwrap(status, body)
            if args.json:
                return body
            return (
                f"created environment {item['key']} ({item['name']}){note}\n"
                f"  SDK key:        {item['sdkKey']}\n"
                f"  mobile key:     {item['mobileKey']}\n"
                f"  client-side id: {item['clientSideId']}\n"
                "These keys are shown only once: store them now."
            )
        if args.action == "list":
            _, body = client.call("GET", "/api/v1/environments")
            if args.json:
                return body
            rows = [
                [e["key"], e["name"], str(e["version"]), str(len(e["sdkKeys"]))]
                for e in body["items"]
            ]
            return (
                _table(rows, ["KEY", "NAME", "VERSION", "SDK KEYS"]) if rows else "no environments"
            )
        if args.action == "show":
            _, body = client.call("GET", f"/api/v1/environments/{_q(args.key)}")
            if args.json:
                return body
            keys = "\n".join(
                f"    {k['id']}…  expires {_time(k['expiresMs'])}" for k in body["sdkKeys"]
            )
            return (
                f"{body['key']} ({body['name']}) version {body['version']}\n"
                f"  client-side id: {body['clientSideId']}\n  SDK keys:\n{keys}"
            )
        if args.action == "rotate-sdk-key":
            status, body = client.call(
                "POST",
                f"/api/v1/environments/{_q(args.key)}/sdk-keys/rotate",
                {"expireOldInSeconds": args.expire_old_in},
                comment,
            )
            item, note = _unwrap(status, body)
            if args.json:
                return body
            return (
                f"new SDK key for {args.key}: {item['sdkKey']}{note}\n"
                f"old keys valid until {_time(item['oldKeysExpireMs'])}. "
                "The new key is shown only once."
            )

    if cmd == "token":
        if args.action == "create":
            envs: Any = "*" if not args.env else args.env
            _, body = client.call(
                "POST",
                "/api/v1/tokens",
                {"name": args.name, "scopes": args.scope or ["read"], "environments": envs},
            )
            if args.json:
                return body
            return (
                f"created token {body['name']} (id {body['id']}, "
                f"scopes {','.join(body['scopes'])}, environments {_envs(body['environments'])})\n"
                f"  token: {body['token']}\nIt is shown only once: store it now."
            )
        if args.action == "list":
            _, body = client.call("GET", "/api/v1/tokens")
            if args.json:
                return body
            rows = [
                [
                    t["id"],
                    t["name"],
                    ",".join(t["scopes"]),
                    _envs(t["environments"]),
                    _time(t["createdMs"]),
                ]
                for t in body["items"]
            ]
            return (
                _table(rows, ["ID", "NAME", "SCOPES", "ENVIRONMENTS", "CREATED"])
                if rows
                else "no tokens"
            )
        if args.action == "revoke":
            client.call("DELETE", f"/api/v1/tokens/{_q(args.id)}")
            return {"revoked": args.id} if args.json else f"revoked token {args.id}"

    if cmd in ("flag", "segment"):
        kind = cmd
        if args.action == "put":
            item = _load_file(args.file)
            if not isinstance(item, dict):
                raise CliError(f"{args.file} must hold one {kind} object", EXIT_USAGE)
            key = args.key or item.get("key")
            if not isinstance(key, str) or not key:
                raise CliError(f'{args.file} has no "key"; pass --key', EXIT_USAGE)
            headers = dict(comment)
            if args.if_match is not None:
                headers["If-Match"] = str(args.if_match)
            status, body = client.call("PUT", _items_path(kind, args.env, key), item, headers)
            stored, note = _unwrap(status, body)
            verb = "created" if status == 201 else "updated"
            if args.json:
                return body
            return f"{verb} {kind} {key} in {args.env}: version {stored['version']}{note}"
        if args.action == "get":
            _, body = client.call("GET", _items_path(kind, args.env, args.key))
            return body if args.json else json.dumps(body, indent=2)
        if args.action == "list":
            _, body = client.call("GET", _items_path(kind, args.env))
            if args.json:
                return body
            if kind == "flag":
                rows = [
                    [
                        i["key"],
                        "on" if i.get("on") else "off",
                        str(i["version"]),
                        str(len(i.get("variations", []))),
                    ]
                    for i in body["items"]
                ]
                header = ["KEY", "STATE", "VERSION", "VARIATIONS"]
            else:
                rows = [
                    [i["key"], str(i["version"]), str(len(i.get("included", [])))]
                    for i in body["items"]
                ]
                header = ["KEY", "VERSION", "INCLUDED"]
            return _table(rows, header) if rows else f"no {kind}s in {args.env}"
        if args.action == "delete":
            headers = dict(comment)
            if args.if_match is not None:
                headers["If-Match"] = str(args.if_match)
            status, body = client.call(
                "DELETE", _items_path(kind, args.env, args.key), None, headers
            )
            stored, note = _unwrap(status, body)
            return (
                body
                if args.json
                else f"deleted {kind} {args.key} in {args.env}: version {stored['version']}{note}"
            )
        if args.action == "toggle":
            _, current = client.call("GET", _items_path(kind, args.env, args.key))
            target = (not current.get("on")) if args.state is None else args.state == "on"
            if bool(current.get("on")) == target:  # nothing to change: no new version
                if args.json:
                    return current
                return (
                    f"flag {args.key} in {args.env} is already {args.state} "
                    f"(version {current['version']})"
                )
            headers = {**comment, "If-Match": str(current["version"])}
            status, body = client.call(
                "PATCH", _items_path(kind, args.env, args.key), {"on": target}, headers
            )
            stored, note = _unwrap(status, body)
            if args.json:
                return body
            return (
                f"flag {args.key} in {args.env} is now {'on' if stored['on'] else 'off'} "
                f"(version {stored['version']}){note}"
            )

    if cmd == "audit":
        _, body = client.call(
            "GET", f"/api/v1/environments/{_q(args.env)}/audit?limit={args.limit}"
        )
        if args.json:
            return body
        rows = [
            [
                _time(e["timeMs"]),
                e["actor"],
                e["action"],
                f"{e['kind']} {e['key']}",
                str(e["version"]),
                e.get("comment") or "",
            ]
            for e in body["items"]
        ]
        return (
            _table(rows, ["WHEN", "WHO", "ACTION", "WHAT", "VERSION", "COMMENT"])
            if rows
            else "no audit entries"
        )

    if cmd == "apply":
        return _apply(args, client)

    if cmd == "import":
        return _import_launchdarkly(args, client)

    raise CliError(f"unknown command {cmd}", EXIT_USAGE)  # pragma: no cover


def _bulk_path(env: str, dry_run: bool) -> str:
    return f"/api/v1/environments/{_q(env)}/bulk" + ("?dryRun=true" if dry_run else "")


def _operations_of(doc: Any, path: str) -> list[Any]:
    """The operations of an apply file: ``operations`` as the API takes them, or the
    declarative ``flags`` / ``segments`` (a list, or an object by key) meaning "put these"."""
    if not isinstance(doc, dict):
        raise CliError(f"{path} must hold an object with operations, flags or segments", 2)
    if "operations" in doc:
        ops = doc["operations"]
        if not isinstance(ops, list):
            raise CliError(f"{path}: operations must be a list", EXIT_USAGE)
        return ops
    ops = []
    for kind in ("segment", "flag"):  # segments first: flags may use them
        items = doc.get(kind + "s") or []
        if isinstance(items, dict):
            items = [{"key": k, **v} if isinstance(v, dict) else v for k, v in items.items()]
        if not isinstance(items, list):
            raise CliError(f"{path}: {kind}s must be a list or an object by key", EXIT_USAGE)
        for item in items:
            key = item.get("key") if isinstance(item, dict) else None
            ops.append({"op": "put", "kind": kind, "key": key, "value": item})
    if not ops:
        raise CliError(f"{path} has no operations, flags or segments", EXIT_USAGE)
    return ops


_BULK_MAX = 1000


def _apply(args: argparse.Namespace, client: Client) -> str | Any:
    doc = _load_file(args.file)
    ops = _operations_of(doc, args.file)
    env = args.env or (doc.get("environment") if isinstance(doc, dict) else None)
    if not isinstance(env, str) or not env:
        raise CliError(f'{args.file} names no "environment"; pass --env', EXIT_USAGE)
    if len(ops) > _BULK_MAX:
        raise CliError(
            f"{args.file} has {len(ops)} operations; one atomic request takes at most "
            f"{_BULK_MAX}: split the file",
            EXIT_USAGE,
        )
    body: dict[str, Any] = {"operations": ops, "skipUnchanged": True}
    comment = args.comment or doc.get("comment")
    if comment is not None:
        body["comment"] = comment
    status, answer = client.call("POST", _bulk_path(env, args.dry_run), body)
    if args.json:
        return answer
    pending = " (stored; Kafka delivery pending)" if status == 202 else ""
    lines = [
        f"{'dry run: would change' if args.dry_run else 'applied to'} {env}: "
        f"{answer['written'] if not args.dry_run else len(ops) - answer['unchanged']} written, "
        f"{answer['unchanged']} unchanged{pending}"
        + ("; nothing was written" if args.dry_run else f" (request {answer['requestId']})")
    ]
    for r in answer["results"]:
        what = "unchanged" if r.get("unchanged") else ("create" if r.get("created") else r["op"])
        lines.append(f"  {what:9} {r['kind']:7} {r['key']}  version {r['version']}")
    return "\n".join(lines)


def _env_map(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        source, sep, target = pair.partition("=")
        if not source:
            raise CliError(f"--env {pair!r}: expected LD_ENV[=FLAGSTREAM_ENV]", EXIT_USAGE)
        out[source] = target if sep else source
    return out


def _import_launchdarkly(args: argparse.Namespace, client: Client) -> str:
    from publisher import ldimport

    source = Path(args.source)
    try:
        if ldimport.is_archive(source):
            if args.segments:
                raise CliError("--segments is for the REST export, not an archive", EXIT_USAGE)
            plan = ldimport.read_relay_archive(source)
        else:
            segments = {}
            for pair in args.segments or []:
                env, sep, file = pair.partition("=")
                if not sep or not env or not file:
                    raise CliError(f"--segments {pair!r}: expected ENV=FILE", EXIT_USAGE)
                segments[env] = ldimport.load_json_file(Path(file))
            plan = ldimport.read_rest_export(ldimport.load_json_file(source), segments)
    except ldimport.SourceError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    mapping = _env_map(args.env)
    chosen: list[tuple[ldimport.LdEnvironment, str]] = []
    for env in plan.environments:
        target = mapping.get(env.source, mapping.get(env.key))
        if mapping and target is None:
            continue
        chosen.append((env, target or env.key))
    targets = [t for _, t in chosen]
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise CliError(
            f"several LaunchDarkly environments map to {', '.join(twice)}; choose with "
            "--env PROJECT/ENV=TARGET",
            EXIT_USAGE,
        )
    if not chosen:
        raise CliError("no environment to import (check --env)", EXIT_USAGE)
    _, listed = client.call("GET", "/api/v1/environments")
    existing = {e["key"] for e in listed["items"]}
    lines = []
    for env, target in chosen:
        if target not in existing:
            if not args.create_environments:
                raise CliError(
                    f"environment {target!r} does not exist in flagstream; create it first or "
                    "pass --create-environments",
                    EXIT_API,
                )
            if args.dry_run:
                lines.append(f"would create environment {target} ({env.name})")
            else:
                _, created = client.call(
                    "POST", "/api/v1/environments", {"key": target, "name": env.name}
                )
                created, _ = _unwrap(201, created)
                lines.append(
                    f"created environment {target} ({env.name}); SDK key {created['sdkKey']}, "
                    f"mobile key {created['mobileKey']} (shown only once)"
                )
        ops = [
            {"op": "put", "kind": kind, "key": key, "value": item}
            for kind, items in (("segment", env.segments), ("flag", env.flags))
            for key, item in sorted(items.items())
        ]
        written = unchanged = 0
        for chunk in _chunks(ops):
            body = {"operations": chunk, "skipUnchanged": True, "comment": args.comment or
                    f"imported from LaunchDarkly {env.source}"}  # fmt: skip
            if args.dry_run and target not in existing:
                written += len(chunk)  # a new environment: everything would be created
                continue
            _, answer = client.call("POST", _bulk_path(target, args.dry_run), body)
            unchanged += answer["unchanged"]
            written += len(chunk) - answer["unchanged"]
        verb = "would write" if args.dry_run else "wrote"
        lines.append(
            f"{env.source} -> {target}: {len(env.flags)} flags, {len(env.segments)} segments; "
            f"{verb} {written}, {unchanged} unchanged"
        )
    if plan.notes:
        lines.append(f"not carried over as they are ({len(plan.notes)}):")
        lines.extend(f"  {note}" for note in plan.notes)
    return "\n".join(lines)


_CHUNK_BYTES = 4 * 1024 * 1024  # well below the publisher's bulk body limit (16 MiB default)


def _chunks(ops: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Bulk requests of at most 1,000 operations and about ``_CHUNK_BYTES`` each."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for op in ops:
        n = len(jsoncodec.dumps(op))
        if chunks[-1] and (len(chunks[-1]) >= _BULK_MAX or size + n > _CHUNK_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(op)
        size += n
    return [c for c in chunks if c]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flagstream admin",
        description="Client for the publisher's admin API (FLAGSTREAM_PUBLISHER_URL, "
        "FLAGSTREAM_ADMIN_TOKEN).",
    )
    p.add_argument("--url", default=None, help=f"publisher URL (default {DEFAULT_URL})")
    p.add_argument("--token", default=None, help="API token (default: FLAGSTREAM_ADMIN_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    sub = p.add_subparsers(dest="command", required=True)

    env = sub.add_parser("env", help="environments").add_subparsers(dest="action", required=True)
    c = env.add_parser("create", help="create an environment (prints its keys once)")
    c.add_argument("key")
    c.add_argument("--name")
    c.add_argument("--comment")
    env.add_parser("list", help="list environments")
    s = env.add_parser("show", help="show an environment")
    s.add_argument("key")
    r = env.add_parser("rotate-sdk-key", help="new SDK key; old keys expire later")
    r.add_argument("key")
    r.add_argument(
        "--expire-old-in",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="seconds the old keys stay valid (default 3600; 0 = now)",
    )
    r.add_argument("--comment")

    tok = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    c = tok.add_parser("create", help="create a token (prints it once)")
    c.add_argument("name")
    c.add_argument(
        "--scope",
        action="append",
        choices=["read", "write", "admin", "bypass-approvals"],
        help="repeatable; default read",
    )
    c.add_argument("--env", action="append", help="limit to an environment (repeatable)")
    tok.add_parser("list", help="list tokens (no secrets)")
    r = tok.add_parser("revoke", help="revoke a token by id")
    r.add_argument("id")

    for kind in ("flag", "segment"):
        k = sub.add_parser(kind, help=f"{kind}s").add_subparsers(dest="action", required=True)
        put = k.add_parser("put", help=f"create or replace a {kind} from a JSON or YAML file")
        put.add_argument("env")
        put.add_argument("file", help="path, or - for stdin")
        put.add_argument("--key", help='item key (default: the file\'s "key")')
        put.add_argument("--if-match", type=int, help="expected current version")
        put.add_argument("--comment")
        g = k.add_parser("get", help=f"show a {kind}")
        g.add_argument("env")
        g.add_argument("key")
        ls = k.add_parser("list", help=f"list {kind}s")
        ls.add_argument("env")
        d = k.add_parser("delete", help=f"delete a {kind} (versioned tombstone)")
        d.add_argument("env")
        d.add_argument("key")
        d.add_argument("--if-match", type=int)
        d.add_argument("--comment")
        if kind == "flag":
            t = k.add_parser("toggle", help="switch a flag on or off (default: flip)")
            t.add_argument("env")
            t.add_argument("key")
            t.add_argument("state", nargs="?", choices=["on", "off"])
            t.add_argument("--comment")

    ap = sub.add_parser(
        "apply",
        help="apply a file of changes atomically (all or nothing), JSON or YAML",
        description="FILE holds {environment?, comment?, operations: [{op, kind, key, "
        "value?, ifMatch?}]} as the bulk API takes them, or {environment?, flags, segments} "
        "(lists or objects by key) meaning: put these. At most 1,000 operations; items equal "
        "to the stored ones are left unchanged.",
    )
    ap.add_argument("file", help="path, or - for stdin")
    ap.add_argument("--env", help='environment (default: the file\'s "environment")')
    ap.add_argument("--dry-run", action="store_true", help="validate and report, write nothing")
    ap.add_argument("--comment")

    imp = sub.add_parser("import", help="import flags and segments from another system")
    isub = imp.add_subparsers(dest="system", required=True)
    ld = isub.add_parser(
        "launchdarkly",
        help="from a Relay Proxy offline archive or the REST API's flags export",
        description="SOURCE is a Relay Proxy offline-mode archive (.tar.gz) or the REST API's "
        "flags list (GET /api/v2/flags/PROJECT?summary=0, JSON) with --segments ENV=FILE per "
        "environment (GET /api/v2/segments/PROJECT/ENV). Keys, variations, rules, targets, "
        "segments and prerequisites are kept; what cannot be carried over is listed. "
        "Idempotent: a second run writes nothing. Each bulk request (<= 1,000 items) is atomic.",
    )
    ld.add_argument("source")
    ld.add_argument(
        "--segments", action="append", metavar="ENV=FILE", help="REST segments list (repeatable)"
    )
    ld.add_argument(
        "--env",
        action="append",
        metavar="LD_ENV[=TARGET]",
        help="import only these environments (LD key or PROJECT/ENV), optionally renamed",
    )
    ld.add_argument(
        "--create-environments",
        action="store_true",
        help="create missing flagstream environments (prints their keys once)",
    )
    ld.add_argument("--dry-run", action="store_true", help="report what would change")
    ld.add_argument("--comment")

    a = sub.add_parser("audit", help="an environment's audit log, newest first")
    a.add_argument("env")
    a.add_argument("--limit", type=int, default=20)
    from publisher.governance.cli import add_commands  # governance commands (imports us)

    add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: --help (0) or usage error (2)
        return int(exc.code or 0)
    url = args.url or os.environ.get("FLAGSTREAM_PUBLISHER_URL") or DEFAULT_URL
    token = args.token or os.environ.get("FLAGSTREAM_ADMIN_TOKEN")
    try:
        client = Client(_validate_url(url), token)
        out = run(args, client)
    except CliError as exc:
        print(f"flagstream admin: {exc}", file=sys.stderr)
        return exc.code
    if isinstance(out, str):
        print(out)
    else:
        print(json.dumps(out, indent=2))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
