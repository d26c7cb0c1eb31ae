"""The container image, proven without a Docker engine or a registry: a base assembled from
Debian's archive (deploy/image/build-base.sh, mmdebstrap), the Dockerfile built with buildah,
the image run with podman (runc) on the host network: its configuration (non-root user,
``flagstream`` entrypoint, health check on ``/readyz``, no build tools), a relay reading the
local Kafka that serves a stream and a change, its health check and SIGTERM drain, and
``flagstream dev`` keeping its data in a volume across two containers.

In this sandbox containers run with ``--runtime runc`` (crun refuses the machine's hybrid
cgroup layout) and explicit ``--ulimit`` values no higher than the machine's (the runtime
cannot raise a hard limit: no CAP_SYS_RESOURCE); docs/operations.md says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from relay_support import flag, item_envelope
from test_hub import events_of
from test_server import ENV, SDK_KEY, seeded

from flagstream.stack.process import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BASE_TAG = "localhost/flagstream-base:bookworm"
RUN = ["podman", "--runtime", "runc", "run", "--network", "host"]
# No higher than this machine's hard limits (the OCI runtime may not raise them).
ULIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096"]


def run(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {result.returncode}\n{result.stderr[-3000:]}")
    return result


def _ca_bundle() -> str | None:
    """The CA bundle pip uses here (a TLS-intercepting proxy's, if any) for the build secret."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return os.environ[name]
    default = ssl.get_default_verify_paths().cafile
    return default if default and Path(default).is_file() else None


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    for tool in ("mmdebstrap", "podman", "buildah", "runc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run `make ops-tools`", pytrace=False)
    run("bash", str(REPO / "deploy" / "image" / "build-base.sh"), BASE_TAG, timeout=900)
    tag = f"localhost/flagstream:test-{uuid.uuid4().hex[:8]}"
    build = [
        "buildah",
        "bud",
        "--format",
        "docker",
        "--layers=false",
        "--isolation",
        "chroot",
        "--build-arg",
        f"BASE_IMAGE={BASE_TAG}",
        "-t",
        tag,
        "-f",
        str(REPO / "Dockerfile"),
    ]
    ca = _ca_bundle()
    if ca is not None:
        build += ["--secret", f"id=pip-ca,src={ca}"]
    run(*build, str(REPO), timeout=900)
    try:
        yield tag
    finally:
        run("podman", "rmi", "--force", tag, check=False)


def test_image_configuration_user_entrypoint_healthcheck_and_no_build_tools(image: str) -> None:
    (config,) = json.loads(run("podman", "image", "inspect", image).stdout)
    cfg = config["Config"]
    assert cfg["User"] == "flagstream:flagstream"
    assert cfg["Entrypoint"] == ["/opt/flagstream/bin/flagstream"]
    assert cfg["Cmd"] == ["relay"]
    assert "/readyz" in " ".join(config["Healthcheck"]["Test"])
    assert {"8030/tcp", "8031/tcp"} <= set(cfg["ExposedPorts"])
    probe = run(
        *RUN[:-2],
        "--rm",
        *ULIMITS,
        "--entrypoint",
        "/bin/sh",
        image,
        "-c",
        "id -u; for t in gcc cc make git pip pip3; do command -v $t; done; "
        "ls /opt/flagstream/bin; test -e /src && echo has-src; "
        "/opt/flagstream/bin/flagstream --help >/dev/null && echo cli-ok",
    ).stdout.split()
    assert probe[0] == "10001"  # not root
    assert "cli-ok" in probe and "has-src" not in probe
    tools = [p for p in probe if p.endswith(("/gcc", "/cc", "/make", "/git", "/pip", "/pip3"))]
    assert tools == [], f"build tools in the runtime image: {tools}"
    assert not any(name.startswith("pip") for name in probe)


class Container:
    def __init__(self, name: str) -> None:
        self.name = name

    def logs(self) -> str:
        result = run("podman", "logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def stop(self, timeout: int = 20) -> int:
        run("podman", "stop", "--time", str(timeout), self.name, check=False)
        waited = run("podman", "wait", self.name, check=False)
        return int(waited.stdout.strip() or "-1")

    def remove(self) -> None:
        run("podman", "rm", "--force", self.name, check=False)


def start(image: str, *args: str, env: dict[str, str], volumes: tuple[str, ...] = ()) -> Container:
    name = f"flagstream-test-{uuid.uuid4().hex[:8]}"
    command = [*RUN, "-d", "--name", name, *ULIMITS]
    for key, value in env.items():
        command += ["-e", f"{key}={value}"]
    for volume in volumes:
        command += ["-v", volume]
    run(*command, image, *args)
    return Container(name)


async def wait_ready(url: str, container: Container, within: float = 90) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url}/readyz not ready: {container.logs()}")
            await asyncio.sleep(0.3)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_relay_container_serves_a_stream_passes_its_healthcheck_and_drains(
    image: str, kafka_bootstrap: str, unique_name: str, session: aiohttp.ClientSession
) -> None:
    port = free_port()
    async with seeded(kafka_bootstrap, unique_name) as producer:
        relay = start(
            image,
            "relay",
            env={
                "FLAGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
                "FLAGSTREAM_TOPIC": unique_name,
                "FLAGSTREAM_RELAY_HOST": "127.0.0.1",
                "FLAGSTREAM_RELAY_PORT": str(port),
                "FLAGSTREAM_RELAY_WORKERS": "2",
                "FLAGSTREAM_RELAY_DRAIN_WINDOW": "1",
                "FLAGSTREAM_HEALTHCHECK_PORT": str(port),
            },
        )
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_ready(url, relay)
            health = run(
                "podman", "--runtime", "runc", "healthcheck", "run", relay.name, check=False
            )
            assert health.returncode == 0, health.stdout + health.stderr
            from test_hub import StreamClient

            stream = await StreamClient.open(
                port, "/all", extra_headers=f"Authorization: {SDK_KEY}\r\n"
            )
            assert await stream.head() == 200
            items = await stream.until(lambda i: len(events_of(i)) >= 1, 15)
            assert events_of(items)[0].event == "put"
            await producer.send(item_envelope(ENV, "flag", flag("flag-1", 9)))
            items = await stream.until(lambda i: len(events_of(i)) >= 2, 15)
            patch = json.loads(events_of(items)[1].data)
            assert patch["path"] == "/flags/flag-1" and patch["data"]["version"] == 9
            async with session.get(url + "/metrics") as resp:
                text = await resp.text()
            assert "flagstream_relay_connections 1.0" in text  # the group of 2 workers
            assert text.count("flagstream_relay_worker_info{") == 2
            stream.close()
            assert relay.stop() == 0, relay.logs()  # SIGTERM: drained, exit 0
        finally:
            relay.remove()


async def test_dev_container_keeps_its_data_in_a_volume(
    image: str, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 10001, 10001)  # the image's user owns the volume
    keys = []
    for _ in range(2):
        port = free_port()
        dev = start(
            image,
            "dev",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env={},
            volumes=(f"{data}:/var/lib/flagstream",),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_ready(url, dev)
            # The banner with the SDK key follows /readyz (the demo seed comes after the
            # relay is ready): wait for it rather than read the logs once.
            for _ in range(300):  # up to a minute
                banner = dev.logs()
                if "SDK key" in banner:
                    break
                await asyncio.sleep(0.2)
            key = next(line.split()[2] for line in banner.splitlines() if "SDK key" in line)
            keys.append(key)
            async with session.get(url + "/sdk/latest-all", headers={"Authorization": key}) as r:
                assert r.status == 200
                assert "new-checkout" in (await r.json())["flags"]
            assert dev.stop() == 0, dev.logs()
        finally:
            dev.remove()
    assert keys[0] == keys[1] and keys[0].startswith("sdk-")
    assert (data / ".flagstream" / "flagstream.db").exists()
