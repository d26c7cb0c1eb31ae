"""A realistic LaunchDarkly export, generated: a Relay Proxy offline-mode archive with
prerequisites, targets, context targets, rules of every common operator, segments (nested,
weighted, big), rollouts and experiments; and contexts to evaluate them with.

Deterministic for a seed. The archive layout is the Relay Proxy's: per environment
``{envId}.json`` and ``{envId}-data.json``, and ``checksum.md5`` over them in path order.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any

from ldclient import Context

ATTRIBUTES = ("email", "country", "plan", "age", "appVersion", "groups", "createdAt")


def _clause(rng: random.Random, segments: list[str]) -> dict[str, Any]:
    choice = rng.randrange(10)
    clause: dict[str, Any]
    if choice == 0 and segments:
        clause = {"attribute": "", "op": "segmentMatch", "values": rng.sample(segments, 2)}
    elif choice == 1:
        clause = {"attribute": "email", "op": "endsWith", "values": ["@example.com", "@corp.io"]}
    elif choice == 2:
        clause = {"attribute": "country", "op": "in", "values": rng.sample(COUNTRIES, 3)}
    elif choice == 3:
        clause = {"attribute": "age", "op": "greaterThan", "values": [rng.randrange(18, 60)]}
    elif choice == 4:
        clause = {"attribute": "appVersion", "op": "semVerLessThan", "values": ["2.4.0"]}
    elif choice == 5:
        clause = {"attribute": "email", "op": "matches", "values": ["^qa[0-9]+@"]}
    elif choice == 6:
        clause = {"attribute": "groups", "op": "contains", "values": ["beta"]}
    elif choice == 7:
        clause = {"attribute": "key", "op": "startsWith", "values": ["user-1"]}
    elif choice == 8:
        clause = {
            "attribute": "createdAt",
            "op": "before",
            "values": ["2024-06-01T00:00:00Z"],
        }
    else:
        clause = {"attribute": "plan", "op": "in", "values": ["enterprise"], "contextKind": "org"}
    clause.setdefault("contextKind", "user")
    clause["negate"] = rng.random() < 0.1
    return clause


COUNTRIES = ["de", "fr", "us", "jp", "br", "in", "gb", "ca"]


def _rollout(rng: random.Random, n: int, experiment: bool = False) -> dict[str, Any]:
    cut = sorted(rng.sample(range(1, 100_000), n - 1))
    weights = [b - a for a, b in zip([0, *cut], [*cut, 100_000], strict=True)]
    rollout: dict[str, Any] = {
        "variations": [{"variation": i, "weight": w} for i, w in enumerate(weights)],
        "bucketBy": rng.choice(["key", "key", "email"]),
        "contextKind": "user",
    }
    if rng.random() < 0.3:
        rollout["seed"] = rng.randrange(1, 10**6)
    if experiment:
        rollout["kind"] = "experiment"
        rollout["variations"][0]["untracked"] = False
    return rollout


def _variations(rng: random.Random) -> list[Any]:
    kind = rng.randrange(4)
    if kind == 0:
        return [True, False]
    if kind == 1:
        return [f"v{i}" for i in range(rng.randrange(2, 5))]
    if kind == 2:
        return [rng.randrange(100) for _ in range(3)]
    return [{"theme": "dark", "n": 1}, {"theme": "light", "n": 2}]


def make_segments(rng: random.Random, count: int) -> dict[str, dict[str, Any]]:
    segments: dict[str, dict[str, Any]] = {}
    for i in range(count):
        key = f"segment-{i}"
        seg: dict[str, Any] = {
            "key": key,
            "version": rng.randrange(1, 40),
            "included": [f"user-{rng.randrange(200)}" for _ in range(rng.randrange(0, 5))],
            "excluded": [f"user-{rng.randrange(200)}" for _ in range(rng.randrange(0, 2))],
            "includedContexts": [{"contextKind": "org", "values": [f"org-{i % 7}"]}],
            "excludedContexts": [],
            "salt": f"salt-{i}",
            "rules": [],
            "deleted": False,
        }
        if i % 3 == 0:
            seg["rules"].append({"id": f"sr{i}", "clauses": [_clause(rng, [])]})
        if i % 5 == 0:
            seg["rules"].append(
                {
                    "id": f"sw{i}",
                    "clauses": [_clause(rng, [])],
                    "weight": 40_000,
                    "bucketBy": "key",
                    "rolloutContextKind": "user",
                }
            )
        if i > 3 and i % 11 == 0:  # nested segment
            seg["rules"].append(
                {
                    "clauses": [
                        {
                            "attribute": "",
                            "op": "segmentMatch",
                            "values": ["segment-1"],
                            "contextKind": "user",
                            "negate": False,
                        }
                    ]
                }
            )
        segments[key] = seg
    segments["segment-big"] = {
        "key": "segment-big",
        "version": 3,
        "unbounded": True,
        "unboundedContextKind": "user",
        "generation": 2,
        "included": [],
        "excluded": [],
        "rules": [],
        "salt": "big",
        "deleted": False,
    }
    segments["segment-gone"] = {"key": "segment-gone", "version": 9, "deleted": True}
    return segments


def make_flags(rng: random.Random, count: int, segments: list[str]) -> dict[str, dict[str, Any]]:
    flags: dict[str, dict[str, Any]] = {}
    for i in range(count):
        key = f"flag-{i:05d}"
        variations = _variations(rng)
        n = len(variations)
        flag: dict[str, Any] = {
            "key": key,
            "version": rng.randrange(1, 500),
            "on": rng.random() < 0.85,
            "variations": variations,
            "offVariation": rng.randrange(n) if rng.random() < 0.9 else None,
            "salt": f"{key}-salt",
            "sel": f"{rng.getrandbits(64):016x}",
            "targets": [],
            "contextTargets": [],
            "rules": [],
            "prerequisites": [],
            "trackEvents": False,
            "trackEventsFallthrough": False,
            "clientSideAvailability": {
                "usingMobileKey": rng.random() < 0.5,
                "usingEnvironmentId": rng.random() < 0.3,
            },
            "clientSide": False,
            "debugEventsUntilDate": None,
            "deleted": False,
        }
        if rng.random() < 0.3:
            flag["targets"].append(
                {
                    "values": [f"user-{rng.randrange(200)}" for _ in range(3)],
                    "variation": rng.randrange(n),
                }
            )
            flag["contextTargets"] = [
                {"contextKind": "user", "values": [], "variation": flag["targets"][0]["variation"]},
                {
                    "contextKind": "org",
                    "values": [f"org-{rng.randrange(7)}"],
                    "variation": rng.randrange(n),
                },
            ]
        for r in range(rng.randrange(0, 4)):
            rule: dict[str, Any] = {
                "id": f"{key}-r{r}",
                "clauses": [_clause(rng, segments) for _ in range(rng.randrange(1, 3))],
                "trackEvents": False,
            }
            if rng.random() < 0.3:
                rule["rollout"] = _rollout(rng, n, experiment=rng.random() < 0.2)
            else:
                rule["variation"] = rng.randrange(n)
            flag["rules"].append(rule)
        if rng.random() < 0.4:
            flag["fallthrough"] = {"rollout": _rollout(rng, n)}
        else:
            flag["fallthrough"] = {"variation": rng.randrange(n)}
        if i > 10 and rng.random() < 0.25:  # prerequisites on earlier flags: chains, no cycles
            for pkey in {f"flag-{rng.randrange(i):05d}" for _ in range(rng.randrange(1, 3))}:
                flag["prerequisites"].append(
                    {"key": pkey, "variation": rng.randrange(len(flags[pkey]["variations"]))}
                )
        if i % 997 == 5:
            flag["rules"].append(
                {
                    "id": f"{key}-big",
                    "variation": 0,
                    "trackEvents": False,
                    "clauses": [
                        {
                            "attribute": "",
                            "op": "segmentMatch",
                            "values": ["segment-big"],
                            "contextKind": "user",
                            "negate": False,
                        }
                    ],
                }
            )
        flags[key] = flag
    flags["flag-deleted"] = {"key": "flag-deleted", "version": 7, "deleted": True}
    return flags


def environment_data(seed: int, flag_count: int, segment_count: int) -> dict[str, Any]:
    rng = random.Random(seed)
    segments = make_segments(rng, segment_count)
    usable = [k for k, s in segments.items() if not s.get("deleted")]
    return {"flags": make_flags(rng, flag_count, usable), "segments": segments}


def write_archive(path: Path, environments: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """A Relay Proxy offline archive: ``environments`` are (metadata rep, SDK data)."""
    files: dict[str, bytes] = {}
    for rep, data in environments:
        env_id = rep["envID"]
        files[f"{env_id}.json"] = json.dumps({"env": rep, "dataId": f"d-{env_id}"}).encode()
        files[f"{env_id}-data.json"] = json.dumps(data).encode()
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(files):
        digest.update(files[name])
    files["checksum.md5"] = digest.digest()
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(content))


def env_rep(env_id: str, key: str, name: str, project: str = "webshop") -> dict[str, Any]:
    return {
        "envID": env_id,
        "envKey": key,
        "envName": name,
        "mobKey": f"mob-{env_id}",
        "projKey": project,
        "projName": project.title(),
        "sdkKey": {"value": f"sdk-{env_id}"},
        "defaultTtl": 0,
        "secureMode": False,
        "version": 4,
    }


def contexts(count: int, seed: int = 7) -> list[Context]:
    """Users (some with org in a multi-kind context) with the attributes the rules use."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        builder = (
            Context.builder(f"user-{rng.randrange(300)}")
            .set("email", rng.choice(["qa1@example.com", "ann@corp.io", "bob@mail.de"]))
            .set("country", rng.choice(COUNTRIES))
            .set("age", rng.randrange(10, 80))
            .set("appVersion", rng.choice(["2.3.9", "2.4.0", "3.0.0-beta.1"]))
            .set("groups", rng.sample(["beta", "staff", "vip"], rng.randrange(0, 3)))
            .set("createdAt", rng.choice(["2023-01-05T10:00:00Z", "2025-02-01T00:00:00Z"]))
        )
        user = builder.build()
        if i % 3 == 0:
            org = Context.builder(f"org-{rng.randrange(7)}").kind("org").set("plan", "enterprise")
            out.append(Context.create_multi(user, org.build()))
        else:
            out.append(user)
    return out
