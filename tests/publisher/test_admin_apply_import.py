"""``flagstream admin apply`` and ``flagstream admin import launchdarkly`` (REST export and
archive errors) against a running publisher (real Kafka, in-memory store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ld_archive import env_rep, environment_data, write_archive
from publisher_support import ApiFactory
from test_admin_cli import admin

from publisher.memory_store import MemoryStore

pytestmark = pytest.mark.integration

FLAG = {"on": True, "variations": [True, False], "fallthrough": {"variation": 0}, "offVariation": 1}


async def test_apply_is_atomic_idempotent_and_has_a_dry_run(
    make_api: ApiFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = await make_api(MemoryStore())
    url = api.url("/")
    assert (await admin(capsys, url, "env", "create", "prod"))[0] == 0
    changes = tmp_path / "changes.yaml"
    changes.write_text(
        "environment: prod\ncomment: launch\nflags:\n"
        "  new-ui: {on: true, variations: [true, false], fallthrough: {variation: 0}}\n"
        "  old-ui: {on: false, variations: [1, 2], fallthrough: {variation: 1}}\n"
        "segments:\n  - {key: beta, included: [u1]}\n"
    )
    code, out, _ = await admin(capsys, url, "apply", str(changes), "--dry-run")
    assert code == 0 and "dry run: would change prod: 3 written" in out, out
    assert await api.store.list_items("prod", "flag") == {}
    code, out, _ = await admin(capsys, url, "apply", str(changes))
    assert code == 0 and "applied to prod: 3 written, 0 unchanged" in out, out
    assert "create    flag    new-ui  version 1" in out
    code, out, _ = await admin(capsys, url, "apply", str(changes))
    assert code == 0 and "applied to prod: 0 written, 3 unchanged" in out, out

    ops = tmp_path / "ops.json"
    ops.write_text(
        json.dumps(
            {
                "operations": [
                    {"op": "patch", "kind": "flag", "key": "new-ui", "value": {"on": False}},
                    {"op": "delete", "kind": "flag", "key": "nope"},
                    {
                        "op": "put",
                        "kind": "flag",
                        "key": "x",
                        # A variation index out of range can only ever evaluate to an error.
                        "value": {"on": True, "variations": [1], "fallthrough": {"variation": 3}},
                    },
                ]
            }
        )
    )
    code, _, err = await admin(capsys, url, "apply", str(ops), "--env", "prod")
    assert code == 1
    assert "2 of 3 operation(s) cannot be applied, so nothing was written" in err
    assert "operations[1] flag nope: 404" in err and "operations[2] flag x: 422" in err
    stored = json.loads((await api.store.get_item("prod", "flag", "new-ui")) or b"")
    assert stored["on"] is True and stored["version"] == 1

    too_many = tmp_path / "many.json"
    too_many.write_text(json.dumps({"flags": [{"key": f"f{i}", **FLAG} for i in range(1001)]}))
    code, _, err = await admin(capsys, url, "apply", str(too_many), "--env", "prod")
    assert code == 2 and "at most 1000" in err
    code, _, err = await admin(capsys, url, "apply", str(changes.with_name("missing.yaml")))
    assert code == 2 and "cannot read" in err
    no_env = tmp_path / "noenv.json"
    no_env.write_text(json.dumps({"flags": []}))
    code, _, err = await admin(capsys, url, "apply", str(no_env))
    assert code == 2


def rest_flag(key: str, **env_sections: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": key,
        "name": key.title(),
        "kind": "multivariate",
        "_version": 3,
        "_links": {"parent": {"href": "/api/v2/flags/shop"}, "self": {"href": f"/x/{key}"}},
        "variations": [
            {"_id": "a", "value": "red", "name": "Red"},
            {"_id": "b", "value": "green"},
            {"_id": "c", "value": "blue"},
        ],
        "clientSideAvailability": {"usingMobileKey": True, "usingEnvironmentId": False},
        "environments": env_sections,
    }


def rest_env(**extra: Any) -> dict[str, Any]:
    section = {
        "on": True,
        "archived": False,
        "salt": "s4lt",
        "sel": "abc",
        "lastModified": 1700000000000,
        "version": 12,
        "targets": [{"values": ["alice"], "variation": 2, "contextKind": "user"}],
        "contextTargets": [{"values": ["acme"], "variation": 1, "contextKind": "org"}],
        "rules": [
            {
                "_id": "r1",
                "variation": 1,
                "clauses": [
                    {
                        "_id": "c1",
                        "attribute": "email",
                        "op": "endsWith",
                        "values": ["@corp.io"],
                        "negate": False,
                        "contextKind": "user",
                    }
                ],
                "trackEvents": False,
                "description": "staff",
            },
            {
                "_id": "r2",
                "rollout": {
                    "variations": [
                        {"variation": 0, "weight": 30000, "_untracked": False},
                        {"variation": 2, "weight": 70000, "_untracked": True},
                    ],
                    "bucketBy": "key",
                    "contextKind": "user",
                    "seed": 61,
                    "experimentAllocation": {"defaultVariation": 0, "canReshuffle": False},
                },
                "clauses": [
                    {
                        "_id": "c2",
                        "attribute": "",
                        "op": "segmentMatch",
                        "values": ["beta"],
                        "negate": False,
                    }
                ],
                "trackEvents": True,
            },
        ],
        "fallthrough": {"variation": 0},
        "offVariation": 2,
        "prerequisites": [{"key": "base", "variation": 0}],
        "_site": {"href": "/x"},
        "trackEvents": False,
        "trackEventsFallthrough": False,
    }
    section.update(extra)
    return section


async def test_import_of_a_rest_export_maps_every_environment(
    make_api: ApiFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = await make_api(MemoryStore())
    url = api.url("/")
    flags_doc = {
        "items": [
            rest_flag("colour", production=rest_env(), test=rest_env(on=False)),
            rest_flag("base", production=rest_env(prerequisites=[], rules=[])),
            rest_flag("legacy", production=rest_env(archived=True)),
        ]
    }
    segments_doc = {
        "items": [
            {
                "key": "beta",
                "name": "Beta",
                "included": ["bob"],
                "excluded": [],
                "includedContexts": [{"contextKind": "org", "values": ["acme"]}],
                "excludedContexts": [],
                "rules": [{"_id": "sr", "clauses": [], "weight": 5000, "bucketBy": "key"}],
                "version": 4,
                "_links": {"self": {"href": "/api/v2/segments/shop/production/beta"}},
                "_flags": [],
            }
        ]
    }
    flags_file, segments_file = tmp_path / "flags.json", tmp_path / "segments.json"
    flags_file.write_text(json.dumps(flags_doc))
    segments_file.write_text(json.dumps(segments_doc))
    argv = ["import", "launchdarkly", str(flags_file), "--segments", f"production={segments_file}"]
    code, out, _ = await admin(
        capsys, url, *argv, "--env", "production=prod", "--create-environments"
    )
    assert code == 0, out
    assert "shop/production -> prod: 2 flags, 1 segments; wrote 3, 0 unchanged" in out
    assert "flag 'legacy': archived in LaunchDarkly, skipped" in out
    assert "experiment allocation, imported as a plain rollout" in out
    assert "has weighted rules but the REST export has no salt" in out
    assert "test" not in [e.key for e in await api.store.list_environments()]
    colour = json.loads((await api.store.get_item("prod", "flag", "colour")) or b"")
    assert colour["variations"] == ["red", "green", "blue"]
    assert colour["salt"] == "s4lt" and colour["offVariation"] == 2 and colour["on"] is True
    assert colour["targets"] == [{"values": ["alice"], "variation": 2, "contextKind": "user"}]
    assert colour["prerequisites"] == [{"key": "base", "variation": 0}]
    assert colour["rules"][0]["id"] == "r1" and "description" not in colour["rules"][0]
    assert colour["rules"][1]["rollout"] == {
        "variations": [
            {"variation": 0, "weight": 30000},
            {"variation": 2, "weight": 70000, "untracked": True},
        ],
        "bucketBy": "key",
        "contextKind": "user",
        "seed": 61,
    }
    assert "_site" not in colour and "sel" not in colour
    beta = json.loads((await api.store.get_item("prod", "segment", "beta")) or b"")
    assert beta["included"] == ["bob"] and beta["rules"][0]["weight"] == 5000
    code, out, _ = await admin(capsys, url, *argv, "--env", "production=prod")
    assert code == 0 and "wrote 0, 3 unchanged" in out, out
    code, out, _ = await admin(capsys, url, *argv, "--env", "test", "--dry-run",
                               "--create-environments")  # fmt: skip
    assert code == 0 and "would create environment test" in out and "would write 1" in out


async def test_import_refuses_a_damaged_or_foreign_source(
    make_api: ApiFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = await make_api(MemoryStore())
    url = api.url("/")
    archive = tmp_path / "a.tar.gz"
    write_archive(archive, [(env_rep("e1", "production", "P"), environment_data(1, 3, 1))])
    damaged = tmp_path / "damaged.tar.gz"
    data = archive.read_bytes()
    import gzip
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    members["e1-data.json"] = members["e1-data.json"].replace(b'"on": true', b'"on": false', 1)
    with tarfile.open(damaged, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    code, _, err = await admin(capsys, url, "import", "launchdarkly", str(damaged))
    assert code == 2 and "checksum.md5 does not match" in err
    other = tmp_path / "other.json"
    other.write_text('{"something": 1}')
    code, _, err = await admin(capsys, url, "import", "launchdarkly", str(other))
    assert code == 2 and "must be a list" in err
    code, _, err = await admin(capsys, url, "import", "launchdarkly", str(tmp_path / "none.json"))
    assert code == 2 and "cannot read" in err
    code, _, err = await admin(capsys, url, "import", "launchdarkly", str(archive))
    assert code == 1 and "--create-environments" in err
