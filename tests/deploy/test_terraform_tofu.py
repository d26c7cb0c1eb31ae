"""Run the real OpenTofu engine on the parts of deploy/terraform that need no provider.

`tofu validate` of a module that uses the AWS provider needs the provider's schema, which
cannot be downloaded offline. What runs without any provider, and is exercised here:

- every module's and the example's ``variables.tf`` alone, planned with a valid fixture:
  types check, every validation rule is evaluated by the real engine (RE2 regexes, cidrhost,
  optional() defaults), and the example's ``terraform.tfvars.example`` type-checks against
  the regions map;
- the same with one bad value at a time: each must be refused with its own message;
- the provider-free ``prometheus-sidecar`` module: `validate`, then `apply` (no resources,
  local state in a temp dir) and the rendered collector configuration is checked.

The binary comes from $FLAGSTREAM_TOFU (set by deploy/terraform/check.sh, which builds
OpenTofu from the Go module proxy once and caches it), else the cache path, else `tofu` or
`terraform` on PATH. Without any binary the module is skipped, unless FLAGSTREAM_TOFU is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TF = REPO / "deploy" / "terraform"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEFAULT_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flagstream" / "tools"
)


def _find_binary() -> str | None:
    explicit = os.environ.get("FLAGSTREAM_TOFU")
    if explicit:
        assert Path(explicit).is_file(), f"FLAGSTREAM_TOFU={explicit} does not exist"
        return explicit
    cached = sorted(DEFAULT_CACHE.glob("tofu-*/tofu"))
    if cached:
        return str(cached[-1])
    return shutil.which("tofu") or shutil.which("terraform")


# `make test` builds OpenTofu (deploy/terraform/check.sh) before pytest runs; without a
# binary every test here fails with that fix rather than being skipped.
BINARY = _find_binary()


def run(args: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if BINARY is None:
        pytest.fail("no OpenTofu/Terraform binary: run `bash deploy/terraform/check.sh` first")
    rc_file = tmp_path / "empty.tfrc"
    rc_file.write_text("")
    env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(rc_file),  # no user config, no credentials, no mirrors
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",  # no version check call-home
        "TF_DATA_DIR": str(tmp_path / ".tfdata"),
    }
    return subprocess.run(
        [BINARY, *args, "-no-color"] if args[0] != "output" else [BINARY, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def variables_only(module: Path, tmp_path: Path) -> Path:
    work = tmp_path / module.name
    work.mkdir()
    shutil.copy(module / "variables.tf", work / "variables.tf")
    return work


def plan(
    work: Path, tmp_path: Path, var_file: Path, overrides: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    args = ["plan", "-input=false", "-lock=false", f"-var-file={var_file}"]
    for key, value in overrides.items():
        args.append(f"-var={key}={value}")
    return run(args, work, tmp_path)


MODULE_FIXTURES: dict[str, tuple[Path, Path, dict[str, str]]] = {
    "relay-region": (TF / "modules" / "relay-region", FIXTURES / "relay-region.tfvars", {}),
    "publisher": (TF / "modules" / "publisher", FIXTURES / "publisher.tfvars", {}),
    "prometheus-sidecar": (
        TF / "modules" / "prometheus-sidecar",
        FIXTURES / "prometheus-sidecar.tfvars",
        {},
    ),
    "multi-region": (
        TF / "examples" / "multi-region",
        TF / "examples" / "multi-region" / "terraform.tfvars.example",
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(MODULE_FIXTURES))
def test_variables_accept_valid_fixture(name: str, tmp_path: Path) -> None:
    module, var_file, overrides = MODULE_FIXTURES[name]
    result = plan(variables_only(module, tmp_path), tmp_path, var_file, overrides)
    assert result.returncode == 0, result.stdout + result.stderr


# (module, variable, bad value as HCL, fragment of the expected error message)
BAD_VALUES = [
    ("relay-region", "name", '"Flagstream_EU"', "name must be 2-24 chars"),
    ("relay-region", "container_image", '"flagstream:latest"', "pinned to an explicit tag"),
    ("relay-region", "container_image", '"flagstream"', "pinned to an explicit tag"),
    ("relay-region", "kafka_bootstrap", '"broker-without-port"', "host:port"),
    ("relay-region", "task_subnet_ids", '["subnet-0a1b2c3d4e5f60111"]', "at least two subnet"),
    ("relay-region", "allowed_client_cidrs", '["10.0.0.0/33"]', "valid IPv4 CIDR"),
    ("relay-region", "tcp_idle_timeout_seconds", "30", "between 60 and 6000"),
    ("relay-region", "drain_window_seconds", "200", "between 0 and 100"),
    ("relay-region", "drain_margin_seconds", "1", "between 5 and 300"),
    ("relay-region", "heartbeat_interval_seconds", "0", "(0, 120]"),
    ("relay-region", "cpu", "3000", "Fargate size"),
    ("relay-region", "memory", "1000", "multiple of 512"),
    ("relay-region", "target_cpu_percent", "95", "between 10 and 90"),
    ("relay-region", "max_connection_lifetime_seconds", "10", "at least 60"),
    ("relay-region", "extra_environment", '{ PATH = "/bin" }', "FLAGSTREAM_*"),
    ("relay-region", "secrets", '{ TOKEN = "plain-text" }', "Secrets Manager or SSM"),
    ("relay-region", "ssl_policy", '"ELBSecurityPolicy-2016-08"', "TLS 1.2+"),
    ("relay-region", "topic", '"bad topic"', "topic must be"),
    ("publisher", "admin_cidrs", '["0.0.0.0/0"]', "not 0.0.0.0/0"),
    ("publisher", "admin_token_secret_arn", '"my-token"', "Secrets Manager secret ARN"),
    ("publisher", "redis_replicas", "0", "between 1 and 5"),
    ("publisher", "redis_engine", '"memcached"', "redis or valkey"),
    ("prometheus-sidecar", "cloudwatch_namespace", '"AWS/ECS"', "not start with AWS/"),
    (
        "prometheus-sidecar",
        "cloudwatch_metric_selectors",
        '["(unclosed"]',
        "valid regular expression",
    ),
    (
        "multi-region",
        "regions",
        '{ "mars-north-1" = { vpc_id = "v", task_subnet_ids = [], lb_subnet_ids = [],'
        ' kafka_bootstrap = "k:1", certificate_arn = "c" } }',
        "regions keys must be among",
    ),
]


@pytest.mark.parametrize(
    ("name", "variable", "value", "message"),
    BAD_VALUES,
    ids=[f"{m}.{v}={val[:24]}" for m, v, val, _ in BAD_VALUES],
)
def test_variables_refuse_bad_value(
    name: str, variable: str, value: str, message: str, tmp_path: Path
) -> None:
    module, var_file, overrides = MODULE_FIXTURES[name]
    result = plan(
        variables_only(module, tmp_path), tmp_path, var_file, {**overrides, variable: value}
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, f"{name}: {variable}={value} was accepted"
    assert message in output, output[-800:]


def test_sidecar_validates_and_renders(tmp_path: Path) -> None:
    work = tmp_path / "prometheus-sidecar"
    shutil.copytree(TF / "modules" / "prometheus-sidecar", work)
    shutil.copy(FIXTURES / "prometheus-sidecar.tfvars", work / "terraform.tfvars")
    for args in (
        ["init", "-input=false", "-backend=false"],
        ["validate"],
        ["apply", "-input=false", "-lock=false", "-auto-approve"],
    ):
        result = run(args, work, tmp_path)
        assert result.returncode == 0, f"{args[0]}: {result.stdout}{result.stderr}"
    result = run(["output", "-json"], work, tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)
    container = outputs["container_definition"]["value"]
    assert container["essential"] is False
    assert container["readonlyRootFilesystem"] is True
    env = {e["name"]: e["value"] for e in container["environment"]}
    config = yaml.safe_load(env["AOT_CONFIG_CONTENT"])
    scrape = config["receivers"]["prometheus"]["config"]["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == ["127.0.0.1:8030"]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"][0]["labels"]["ServiceName"] == "flagstream-euw1-relay"
    emf = config["exporters"]["awsemf"]
    assert emf["namespace"] == "Flagstream/Relay"
    assert emf["metric_declarations"][0]["dimensions"] == [["ClusterName", "ServiceName"]]
    assert set(config["service"]["pipelines"]["metrics"]["exporters"]) == {
        "awsemf",
        "prometheusremotewrite",
    }
    assert "sigv4auth" in config["extensions"]
