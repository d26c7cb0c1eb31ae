"""Static contract of the Terraform modules in deploy/terraform (no network, no providers).

Parses every .tf file with python-hcl2 and checks what `terraform validate` cannot check
offline, plus what it would not check at all:

- conventions: versions.tf / variables.tf / outputs.tf / README.md in every module and example;
  every variable typed and described, every output described, README tables list them all;
- references: every ``var.X`` is declared, every module call passes all required inputs and
  only inputs the module declares;
- the relay contract (DESIGN.md §6-§8): health check on /readyz, deregistration delay >= drain
  window, NLB idle timeout > heartbeat interval, the FLAGSTREAM_* environment, scaling bounds;
- the multi-region example: one module block per provider alias, identical but for the
  region, driven by one map, with per-region endpoints in the outputs.

Two incompatible distributions install the ``hcl2`` package: python-hcl2 (>= 5: plain values,
string literals keep their quotes) and checkov's bc-python-hcl2 (0.4: each attribute value
wrapped in a one-element list, no quotes). Whichever ends up importable, the accessors below
normalise to one shape.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

hcl2 = pytest.importorskip("hcl2")

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "terraform"
MODULES = ROOT / "modules"
RELAY = MODULES / "relay-region"
PUBLISHER = MODULES / "publisher"
SIDECAR = MODULES / "prometheus-sidecar"
EXAMPLE = ROOT / "examples" / "multi-region"
ALL_ROOTS = [RELAY, PUBLISHER, SIDECAR, EXAMPLE]

META_KEYS = {
    "__start_line__",
    "__end_line__",
    "__is_block__",
    "__comments__",
    "__inline_comments__",
}


# ------------------------------------------------------------------------------------------
# Parser normalisation
# ------------------------------------------------------------------------------------------


@cache
def _wrapped_attributes() -> bool:
    """True for bc-python-hcl2 (attribute values come wrapped in a list)."""
    return isinstance(hcl2.loads("a = 1\n")["a"], list)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text[1:-1]
        return value if isinstance(value, str) else text
    return text


def clean(value: Any) -> Any:
    """Recursively strip parser artefacts: quotes kept on literals, metadata keys."""
    if isinstance(value, str):
        return _unquote(value)
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): clean(v) for k, v in value.items() if k not in META_KEYS}
    return value


def attr(body: dict[str, Any], name: str, default: Any = KeyError) -> Any:
    """The value of attribute ``name`` of a block body."""
    if name not in body:
        if default is KeyError:
            raise KeyError(f"attribute {name!r} missing (have: {sorted(body)})")
        return default
    value = body[name]
    if _wrapped_attributes() and isinstance(value, list) and len(value) == 1:
        value = value[0]
    return clean(value)


def blocks(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Nested blocks ``name { ... }`` of a block body (a list in both parser flavours)."""
    found = body.get(name, [])
    return [b for b in found if isinstance(b, dict)]


def canon(text: str) -> str:
    """Canonical text of an expression, comparable across both parser flavours.

    The parsers render complex expressions differently (python-hcl2 keeps HCL syntax,
    bc-python-hcl2 renders objects Python-style with nested ${...}), so drop what differs:
    interpolation markers, braces, quotes and whitespace; ':' and '=' become one symbol.
    """
    text = text.replace("${", "")
    text = re.sub(r"[{}'\"\s]", "", text)
    return text.replace(":", "=")


def expr(value: Any) -> str:
    """An expression (or any parsed value) in canonical text form."""
    return canon(str(value))


def has(value: Any, fragment: str) -> bool:
    """Whether the expression ``value`` contains the HCL fragment."""
    return canon(fragment) in expr(value)


class Config:
    """All top-level blocks of one Terraform module directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files = sorted(directory.glob("*.tf"))
        self.text = "\n".join(f.read_text() for f in self.files)
        self.raw: dict[str, list[Any]] = {}
        for path in self.files:
            parsed = hcl2.loads(path.read_text())
            for kind, entries in parsed.items():
                self.raw.setdefault(kind, []).extend(entries)

    def labelled(self, kind: str) -> dict[str, dict[str, Any]]:
        """One-label blocks (variable, output, module) by name."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self.raw.get(kind, []):
            for label, body in entry.items():
                out[_unquote(label)] = body
        return out

    def resources(self, rtype: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for entry in self.raw.get("resource", []):
            for typ, named in entry.items():
                if _unquote(typ) == rtype:
                    for label, body in named.items():
                        out[_unquote(label)] = body
        return out

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        found = self.resources(rtype)
        assert name in found, f"{self.directory.name}: resource {rtype}.{name} missing"
        return found[name]

    def locals(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for entry in self.raw.get("locals", []):
            for key in entry:
                if key not in META_KEYS:
                    out[key] = attr(entry, key)
        return out

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return self.labelled("variable")

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return self.labelled("output")

    @property
    def modules(self) -> dict[str, dict[str, Any]]:
        return self.labelled("module")

    def default(self, variable: str) -> Any:
        return attr(self.variables[variable], "default")

    def required_inputs(self) -> set[str]:
        return {n for n, body in self.variables.items() if "default" not in body}


@cache
def load(directory: Path) -> Config:
    return Config(directory)


def evaluate(config: Config, expression: str, depth: int = 0) -> float:
    """Evaluate a numeric expression over var defaults and locals (min/max, + - * /)."""
    assert depth < 10, f"locals nest too deep: {expression}"
    local_values = config.locals()

    def var_value(match: re.Match[str]) -> str:
        value = config.default(match.group(1))
        assert isinstance(value, int | float), f"var.{match.group(1)} has no numeric default"
        return repr(value)

    def local_value(match: re.Match[str]) -> str:
        return repr(evaluate(config, expr(local_values[match.group(1)]), depth + 1))

    text = re.sub(r"\bvar\.(\w+)", var_value, expression)
    text = re.sub(r"\blocal\.(\w+)", local_value, text)
    assert re.fullmatch(r"[0-9.\s+\-*/(),minax]*", text), f"not a plain arithmetic: {text!r}"
    result = eval(text, {"__builtins__": {}}, {"min": min, "max": max})  # arithmetic only
    assert isinstance(result, int | float)
    return result


# ------------------------------------------------------------------------------------------
# Conventions
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", ALL_ROOTS, ids=lambda p: p.name)
def test_layout(directory: Path) -> None:
    for name in ("versions.tf", "variables.tf", "outputs.tf", "README.md"):
        assert (directory / name).is_file(), f"{directory.name}/{name} missing"
    config = load(directory)
    terraform = config.raw.get("terraform", [])
    assert terraform, f"{directory.name}: no terraform block"
    required_version = attr(terraform[0], "required_version")
    assert required_version.startswith(">="), required_version


@pytest.mark.parametrize("directory", ALL_ROOTS, ids=lambda p: p.name)
def test_every_variable_typed_and_described(directory: Path) -> None:
    config = load(directory)
    assert config.variables, f"{directory.name}: no variables"
    for name, body in config.variables.items():
        assert "type" in body, f"{directory.name}: variable {name} has no type"
        description = attr(body, "description", "")
        assert isinstance(description, str) and len(description) >= 10, (
            f"{directory.name}: variable {name} needs a description"
        )
        for validation in blocks(body, "validation"):
            assert attr(validation, "error_message").strip(), f"{name}: empty error_message"


@pytest.mark.parametrize("directory", ALL_ROOTS, ids=lambda p: p.name)
def test_every_output_described(directory: Path) -> None:
    config = load(directory)
    assert config.outputs, f"{directory.name}: no outputs"
    for name, body in config.outputs.items():
        assert "value" in body, f"{directory.name}: output {name} has no value"
        assert len(attr(body, "description", "")) >= 10, f"output {name} needs a description"


@pytest.mark.parametrize("directory", ALL_ROOTS, ids=lambda p: p.name)
def test_variables_validated_where_possible(directory: Path) -> None:
    """Strings, numbers and lists carry validation; free-form maps/objects/bools may not."""
    config = load(directory)
    exempt_types = ("bool", "map(string)", "object(")
    for name, body in config.variables.items():
        vtype = expr(attr(body, "type"))
        if vtype.startswith(exempt_types):
            continue
        assert blocks(body, "validation"), (
            f"{directory.name}: variable {name} ({vtype}) lacks validation"
        )


@pytest.mark.parametrize("directory", ALL_ROOTS, ids=lambda p: p.name)
def test_readme_documents_every_input_and_output(directory: Path) -> None:
    readme = (directory / "README.md").read_text()
    config = load(directory)
    for kind, names in (("input", config.variables), ("output", config.outputs)):
        for name in names:
            assert f"`{name}`" in readme, (
                f"{directory.name}/README.md does not list {kind} `{name}`"
            )


@pytest.mark.parametrize("directory", ALL_ROOTS, ids=lambda p: p.name)
def test_every_var_reference_is_declared(directory: Path) -> None:
    config = load(directory)
    referenced = set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", config.text))
    missing = referenced - set(config.variables)
    assert not missing, f"{directory.name}: undeclared variables referenced: {sorted(missing)}"


@pytest.mark.parametrize("directory", ALL_ROOTS, ids=lambda p: p.name)
def test_every_local_reference_is_declared(directory: Path) -> None:
    config = load(directory)
    referenced = set(re.findall(r"\blocal\.([A-Za-z_][A-Za-z0-9_]*)", config.text))
    missing = referenced - set(config.locals())
    assert not missing, f"{directory.name}: undeclared locals referenced: {sorted(missing)}"


@pytest.mark.parametrize("directory", ALL_ROOTS, ids=lambda p: p.name)
def test_module_calls_match_module_interfaces(directory: Path) -> None:
    config = load(directory)
    meta = {"source", "for_each", "count", "providers", "depends_on", "version"}
    for call_name, body in config.modules.items():
        source = attr(body, "source")
        assert source.startswith("../"), f"{call_name}: only local modules are used ({source})"
        target = load((directory / source).resolve())
        passed = {k for k in body if k not in META_KEYS} - meta
        unknown = passed - set(target.variables)
        assert not unknown, (
            f"{directory.name}: module {call_name} passes unknown inputs {sorted(unknown)}"
        )
        missing = target.required_inputs() - passed
        assert not missing, (
            f"{directory.name}: module {call_name} misses required inputs {sorted(missing)}"
        )


# ------------------------------------------------------------------------------------------
# Relay module contract
# ------------------------------------------------------------------------------------------

RELAY_REQUIRED_INPUTS = {
    "name": "string",
    "vpc_id": "string",
    "task_subnet_ids": "list(string)",
    "lb_subnet_ids": "list(string)",
    "container_image": "string",
    "kafka_bootstrap": "string",
}
RELAY_OPTIONAL_INPUTS = {
    "topic": "string",
    "relay_workers": "number",
    "relay_port": "number",
    "heartbeat_interval_seconds": "number",
    "drain_window_seconds": "number",
    "max_connections_per_task": "number",
    "max_connection_lifetime_seconds": "number",
    "min_capacity": "number",
    "max_capacity": "number",
    "cpu": "number",
    "memory": "number",
    "target_connections_per_task": "number",
    "target_cpu_percent": "number",
    "tcp_idle_timeout_seconds": "number",
    "certificate_arn": "string",
}
RELAY_OUTPUTS = {
    "endpoint_url",
    "lb_dns_name",
    "lb_zone_id",
    "target_group_arn",
    "task_security_group_id",
    "service_name",
    "cluster_name",
    "log_group_name",
    "metrics_namespace",
    "deregistration_delay_seconds",
    "autoscaling",
}


def test_relay_inputs() -> None:
    relay = load(RELAY)
    assert relay.required_inputs() == set(RELAY_REQUIRED_INPUTS), "required inputs changed"
    for name, vtype in {**RELAY_REQUIRED_INPUTS, **RELAY_OPTIONAL_INPUTS}.items():
        assert name in relay.variables, f"relay-region: input {name} missing"
        assert expr(attr(relay.variables[name], "type")) == vtype, f"{name}: type"
    assert relay.default("relay_port") == 8030
    assert relay.default("heartbeat_interval_seconds") == 15
    assert relay.default("drain_window_seconds") == 10
    assert relay.default("topic") == "flagstream.state"


def test_relay_outputs() -> None:
    missing = RELAY_OUTPUTS - set(load(RELAY).outputs)
    assert not missing, f"relay-region: outputs missing {sorted(missing)}"


def test_relay_health_check_is_readyz() -> None:
    tg = load(RELAY).resource("aws_lb_target_group", "relay")
    (health,) = blocks(tg, "health_check")
    assert attr(health, "path") == "/readyz"
    assert attr(health, "protocol") == "HTTP"
    assert attr(health, "matcher") == "200"
    assert attr(health, "port") == "traffic-port"
    assert attr(tg, "target_type") == "ip"
    assert attr(tg, "protocol") == "TCP"


def test_relay_deregistration_outlasts_drain_window() -> None:
    relay = load(RELAY)
    tg = relay.resource("aws_lb_target_group", "relay")
    delay = expr(attr(tg, "deregistration_delay"))
    assert delay == "local.deregistration_delay_seconds"
    formula = expr(relay.locals()["deregistration_delay_seconds"])
    assert formula == canon("var.drain_window_seconds + var.drain_margin_seconds")
    # The margin is validated >= 5, so the relation holds for every accepted input ...
    margin_checks = [
        expr(attr(v, "condition"))
        for v in blocks(relay.variables["drain_margin_seconds"], "validation")
    ]
    assert any(canon("var.drain_margin_seconds >= 5") in c for c in margin_checks), margin_checks
    # ... and for the defaults.
    assert (
        evaluate(relay, "local.deregistration_delay_seconds")
        >= relay.default("drain_window_seconds") + 5
    )
    # The NLB must not cut streams when the delay ends or a target turns unhealthy.
    assert attr(tg, "connection_termination") is False
    (health_state,) = blocks(tg, "target_health_state")
    assert attr(health_state, "enable_unhealthy_connection_termination") is False


def test_relay_stop_timeout_covers_drain_window() -> None:
    relay = load(RELAY)
    assert (
        evaluate(relay, "local.stop_timeout_seconds") >= relay.default("drain_window_seconds") + 5
    )
    assert "stopTimeout = local.stop_timeout_seconds" in re.sub(
        r"\s+", " ", (RELAY / "ecs.tf").read_text()
    )
    # Fargate's cap: the drain window validation must keep drain + 5 <= 120.
    condition = expr(
        attr(blocks(relay.variables["drain_window_seconds"], "validation")[0], "condition")
    )
    bound = int(re.search(r"var\.drain_window_seconds<=(\d+)", condition).group(1))  # type: ignore[union-attr]
    assert bound + 5 <= 120


def test_relay_idle_timeout_exceeds_heartbeat() -> None:
    relay = load(RELAY)
    listener = relay.resource("aws_lb_listener", "relay")
    assert has(attr(listener, "tcp_idle_timeout_seconds"), "var.tcp_idle_timeout_seconds")
    heartbeat = relay.default("heartbeat_interval_seconds")
    assert evaluate(relay, "var.tcp_idle_timeout_seconds") > 2 * heartbeat
    # TLS listeners have a fixed 350 s timeout; it must beat the largest accepted heartbeat.
    effective = expr(relay.locals()["effective_idle_timeout_seconds"])
    assert canon('"TLS" ? 350 : var.tcp_idle_timeout_seconds') in effective
    heartbeat_bound = expr(
        attr(blocks(relay.variables["heartbeat_interval_seconds"], "validation")[0], "condition")
    )
    max_heartbeat = int(re.search(r"<=(\d+)", heartbeat_bound).group(1))  # type: ignore[union-attr]
    assert 2 * max_heartbeat < 350
    # And a precondition enforces the relation for whatever the caller passes.
    preconditions = [
        expr(attr(p, "condition"))
        for lc in blocks(listener, "lifecycle")
        for p in blocks(lc, "precondition")
    ]
    assert any(
        canon("local.effective_idle_timeout_seconds > 2 * var.heartbeat_interval_seconds") in c
        for c in preconditions
    ), preconditions


def test_relay_environment_wiring() -> None:
    relay = load(RELAY)
    environment = expr(relay.locals()["relay_environment"])
    expected = {
        "FLAGSTREAM_RELAY_HOST": '"0.0.0.0"',
        "FLAGSTREAM_RELAY_PORT": "tostring(var.relay_port)",
        "FLAGSTREAM_KAFKA_BOOTSTRAP": "var.kafka_bootstrap",
        "FLAGSTREAM_TOPIC": "var.topic",
        "FLAGSTREAM_RELAY_WORKERS": "tostring(local.relay_workers)",
        "FLAGSTREAM_RELAY_HEARTBEAT_INTERVAL": "tostring(var.heartbeat_interval_seconds)",
        "FLAGSTREAM_RELAY_DRAIN_WINDOW": "tostring(var.drain_window_seconds)",
        # the relay caps connections per worker: the per-task budget is split over workers
        "FLAGSTREAM_RELAY_MAX_CONNECTIONS": "tostring(local.max_connections_per_worker)",
        "FLAGSTREAM_RELAY_MAX_CONNECTION_LIFETIME": "tostring(var.max_connection_lifetime_seconds)",
    }
    for name, value in expected.items():
        assert canon(f"{name} = {value}") in environment, f"{name} not set to {value}"
    per_worker = expr(relay.locals()["max_connections_per_worker"])
    assert per_worker == canon("ceil(var.max_connections_per_task / local.relay_workers)")
    # Module-set values win over extra_environment (merge order).
    assert environment.startswith(canon("merge(var.extra_environment,")), environment[:60]


def test_relay_listener_and_security() -> None:
    relay = load(RELAY)
    lb = relay.resource("aws_lb", "relay")
    assert attr(lb, "load_balancer_type") == "network"
    # The task security group admits the relay port from the NLB's security group only.
    ingress = relay.resources("aws_vpc_security_group_ingress_rule")
    task_ingress = [
        b
        for b in ingress.values()
        if expr(attr(b, "security_group_id")) == "aws_security_group.task.id"
    ]
    assert len(task_ingress) == 1
    (rule,) = task_ingress
    assert expr(attr(rule, "referenced_security_group_id")) == "aws_security_group.lb.id"
    assert expr(attr(rule, "from_port")) == expr(attr(rule, "to_port")) == "var.relay_port"
    assert "cidr_ipv4" not in rule
    # Tasks get no public address.
    service = relay.resource("aws_ecs_service", "relay")
    (network,) = blocks(service, "network_configuration")
    assert attr(network, "assign_public_ip") is False


def test_relay_autoscaling() -> None:
    relay = load(RELAY)
    target = relay.resource("aws_appautoscaling_target", "relay")
    assert expr(attr(target, "min_capacity")) == "var.min_capacity"
    assert expr(attr(target, "max_capacity")) == "var.max_capacity"
    assert attr(target, "scalable_dimension") == "ecs:service:DesiredCount"
    connections = relay.resource("aws_appautoscaling_policy", "connections")
    (tracking,) = blocks(connections, "target_tracking_scaling_policy_configuration")
    (metric,) = blocks(tracking, "customized_metric_specification")
    assert attr(metric, "metric_name") == "flagstream_relay_connections"
    assert attr(metric, "statistic") == "Average"
    cpu = relay.resource("aws_appautoscaling_policy", "cpu")
    (cpu_tracking,) = blocks(cpu, "target_tracking_scaling_policy_configuration")
    (predefined,) = blocks(cpu_tracking, "predefined_metric_specification")
    assert attr(predefined, "predefined_metric_type") == "ECSServiceAverageCPUUtilization"
    # Autoscaling owns desired_count after creation.
    service = relay.resource("aws_ecs_service", "relay")
    (lifecycle,) = blocks(service, "lifecycle")
    assert "desired_count" in expr(attr(lifecycle, "ignore_changes"))
    assert relay.default("target_connections_per_task") <= 0.8 * relay.default(
        "max_connections_per_task"
    )
    # The sidecar publishes the gauge under exactly the dimensions the policy reads.
    assert '"^flagstream_relay_connections$"' in (RELAY / "ecs.tf").read_text()


def test_relay_scaling_and_alarms_are_per_task_not_per_worker() -> None:
    """A relay's /metrics answers for all its workers (relay/metrics.py), so neither the
    scaling target nor the streams alarm is divided by the worker count any more."""
    relay = load(RELAY)
    assert "relay_metrics_per_worker" not in relay.variables
    assert expr(relay.locals()["connections_target"]) == "var.target_connections_per_task"
    connections = relay.resource("aws_appautoscaling_policy", "connections")
    (tracking,) = blocks(connections, "target_tracking_scaling_policy_configuration")
    assert expr(attr(tracking, "target_value")) == "local.connections_target"
    alarm = relay.resource("aws_cloudwatch_metric_alarm", "near_max_connections")
    assert expr(attr(alarm, "threshold")) == canon("floor(0.9 * var.max_connections_per_task)")
    scaling_text = "".join((RELAY / name).read_text() for name in ("autoscaling.tf", "alarms.tf"))
    assert "relay_workers" not in scaling_text


def test_container_commands_are_arguments_of_the_image_entrypoint() -> None:
    """The Dockerfile's ENTRYPOINT is ``flagstream``: the modules pass only the subcommand."""
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/opt/flagstream/bin/flagstream"]' in dockerfile
    assert load(RELAY).default("container_command") == ["relay"]
    assert load(PUBLISHER).default("container_command") == ["publisher"]


def test_relay_deployments_never_reduce_capacity() -> None:
    service = load(RELAY).resource("aws_ecs_service", "relay")
    assert attr(service, "deployment_minimum_healthy_percent") == 100
    assert attr(service, "deployment_maximum_percent") == 200


# ------------------------------------------------------------------------------------------
# Publisher module contract
# ------------------------------------------------------------------------------------------


def test_publisher_contract() -> None:
    publisher = load(PUBLISHER)
    assert {
        "name",
        "vpc_id",
        "task_subnet_ids",
        "container_image",
        "kafka_bootstrap",
        "admin_token_secret_arn",
        "admin_cidrs",
    } == publisher.required_inputs()
    assert publisher.default("publisher_port") == 8031
    for output in ("admin_endpoint_url", "redis_primary_endpoint", "redis_url_secret_arn"):
        assert output in publisher.outputs
    secrets = expr(publisher.locals()["publisher_secrets"])
    assert canon("FLAGSTREAM_ADMIN_TOKEN = var.admin_token_secret_arn") in secrets
    assert canon("FLAGSTREAM_REDIS_URL = aws_secretsmanager_secret.redis_url.arn") in secrets
    environment = expr(publisher.locals()["publisher_environment"])
    assert "FLAGSTREAM_REDIS_URL" not in environment and "FLAGSTREAM_ADMIN_TOKEN" not in environment
    redis = publisher.resource("aws_elasticache_replication_group", "redis")
    for flag in (
        "automatic_failover_enabled",
        "multi_az_enabled",
        "transit_encryption_enabled",
        "at_rest_encryption_enabled",
    ):
        assert attr(redis, flag) is True, flag
    assert expr(attr(redis, "snapshot_retention_limit")) == "var.redis_snapshot_retention_days"
    assert publisher.default("redis_snapshot_retention_days") >= 1
    params = publisher.resource("aws_elasticache_parameter_group", "redis")
    values = {attr(p, "name"): attr(p, "value") for p in blocks(params, "parameter")}
    assert values.get("maxmemory-policy") == "noeviction"
    lb = publisher.resource("aws_lb", "publisher")
    assert attr(lb, "internal") is True
    tg = publisher.resource("aws_lb_target_group", "publisher")
    assert attr(blocks(tg, "health_check")[0], "path") == "/readyz"


# ------------------------------------------------------------------------------------------
# Multi-region example
# ------------------------------------------------------------------------------------------


def _provider_aliases(config: Config) -> dict[str, str]:
    aliases = {}
    for entry in config.raw.get("provider", []):
        for name, body in entry.items():
            if _unquote(name) == "aws":
                aliases[attr(body, "alias")] = attr(body, "region")
    return aliases


def test_example_one_module_per_region_alias() -> None:
    example = load(EXAMPLE)
    aliases = _provider_aliases(example)
    assert len(aliases) >= 2, "the example should span several regions"
    relay_calls = {
        n: b
        for n, b in example.modules.items()
        if attr(b, "source") == "../../modules/relay-region"
    }
    assert set(relay_calls) == {f"relay_{alias}" for alias in aliases}
    normalised = set()
    for name, body in relay_calls.items():
        alias = name.removeprefix("relay_")
        region = aliases[alias]
        providers = attr(body, "providers")
        providers = providers[0] if isinstance(providers, list) else providers
        assert expr(providers["aws"]) == f"aws.{alias}"
        for_each = expr(attr(body, "for_each"))
        assert "var.regions" in for_each and canon(f'region == "{region}"') in for_each, for_each
        # Identical blocks apart from alias and region: the map drives everything.
        text = json.dumps(
            {k: clean(v) for k, v in body.items() if k not in META_KEYS}, sort_keys=True
        )
        normalised.add(text.replace(alias, "ALIAS").replace(region, "REGION"))
    assert len(normalised) == 1, "relay module blocks differ beyond alias/region"
    # The regions validation accepts exactly the wired regions.
    condition = " ".join(
        expr(attr(v, "condition")) for v in blocks(example.variables["regions"], "validation")
    )
    for region in aliases.values():
        assert f",{region}," in f",{condition.split('contains([', 1)[1].split(']', 1)[0]},", region
    locals_relays = expr(example.locals()["relays"])
    for name in relay_calls:
        assert f"module.{name}" in locals_relays


def test_example_region_map_is_per_region_sized() -> None:
    regions_type = expr(attr(load(EXAMPLE).variables["regions"], "type"))
    for field in ("min_capacity", "max_capacity", "cpu", "memory", "kafka_bootstrap"):
        assert re.search(rf"\b{field}\b", regions_type), f"regions map lacks {field}"


def test_example_outputs() -> None:
    example = load(EXAMPLE)
    for name in ("relay_endpoints", "publisher_admin_url"):
        assert name in example.outputs
    value = expr(attr(example.outputs["relay_endpoints"], "value"))
    assert "local.relays" in value and "endpoint_url" in value
    assert "publisher" in example.modules


def test_example_tfvars_parses_and_matches_regions() -> None:
    sample = (EXAMPLE / "terraform.tfvars.example").read_text()
    parsed = hcl2.loads(sample)
    regions = attr(parsed, "regions")
    aliases = _provider_aliases(load(EXAMPLE))
    assert set(regions) <= set(aliases.values())
    for cfg in regions.values():
        assert cfg["min_capacity"] <= cfg["max_capacity"]


# ------------------------------------------------------------------------------------------
# Checkov suppressions
# ------------------------------------------------------------------------------------------


def test_every_checkov_skip_is_justified() -> None:
    """Inline skips name one check and give a reason (check.sh runs checkov with them)."""
    skips = []
    for path in sorted(ROOT.rglob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "checkov:skip" in line:
                skips.append((path, number, line.strip()))
    assert skips, "expected the documented suppressions"
    for path, number, line in skips:
        match = re.fullmatch(r"#checkov:skip=(CKV2?_AWS_\d+):(.{20,})", line)
        assert match, f"{path.relative_to(ROOT)}:{number}: skip without ID and reason: {line}"
