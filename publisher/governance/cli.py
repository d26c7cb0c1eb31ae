"""``flagstream admin`` subcommands of governance: ``policy``, ``cr``, ``trigger``, ``rollout``,
and the ``--request-id`` / ``--actor`` filters of ``audit``.

Same conventions as the rest of ``flagstream admin`` (``publisher.admin_cli``): readable text
or ``--json``, exit 0 ok, 1 refused by the API (its problem detail printed), 2 bad usage,
3 publisher unreachable.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any, Final

from publisher.admin_cli import EXIT_USAGE, Client, CliError, _load_file, _q, _table, _time

__all__ = ["COMMANDS", "add_commands", "handles", "run"]

COMMANDS: Final = frozenset({"policy", "cr", "trigger", "rollout"})
_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _env_path(env: str) -> str:
    return f"/api/v1/environments/{_q(env)}"


def _bool_flag(p: argparse.ArgumentParser, name: str, help_: str) -> None:
    p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help_)


def _duration_ms(text: str) -> int:
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise CliError(f"--in {text!r}: expected a duration such as 90s, 10m, 2h or 1d", EXIT_USAGE)
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)] * 1000


def _execute_at(args: argparse.Namespace) -> Any:
    if getattr(args, "in_", None) is not None:
        if args.execute_at is not None:
            raise CliError("give --execute-at or --in, not both", EXIT_USAGE)
        return int(time.time() * 1000) + _duration_ms(args.in_)
    if args.execute_at is not None and args.execute_at.isdigit():
        return int(args.execute_at)
    return args.execute_at


def _change(args: argparse.Namespace) -> dict[str, Any] | None:
    given = [x for x in (args.patch, args.patch_file, args.item_file) if x is not None]
    if len(given) + bool(args.delete) > 1:
        raise CliError("give one of --patch, --patch-file, --item-file or --delete", EXIT_USAGE)
    if args.delete:
        return {"delete": True}
    if args.patch is not None:
        try:
            patch = json.loads(args.patch)
        except ValueError as exc:
            raise CliError(f"--patch is not JSON: {exc}", EXIT_USAGE) from exc
        return {"mergePatch": patch}
    if args.patch_file is not None:
        return {"mergePatch": _load_file(args.patch_file)}
    if args.item_file is not None:
        return {"item": _load_file(args.item_file)}
    return None


def _steps(text: str) -> list[dict[str, Any]]:
    """``10:60,50:300,100`` → [{percent 10, hold 60}, {50, 300}, {100, 0}]."""
    steps = []
    for part in text.split(","):
        percent, _, hold = part.strip().partition(":")
        try:
            steps.append(
                {
                    "percent": float(percent) if "." in percent else int(percent),
                    "holdSeconds": int(hold or "0"),
                }
            )
        except ValueError as exc:
            raise CliError(
                f"--steps {text!r}: expected PERCENT:HOLD_SECONDS,... e.g. 10:600,50:600,100",
                EXIT_USAGE,
            ) from exc
    return steps


def _comment_headers(args: argparse.Namespace) -> dict[str, str]:
    return {"X-Change-Comment": args.comment} if getattr(args, "comment", None) else {}


def _cr_line(cr: dict[str, Any]) -> str:
    when = f", executes {_time(cr['executeAt'])}" if cr.get("executeAt") else ""
    line = (
        f"change request {cr['id']} on {cr['resource']}: {cr['status']}, review "
        f"{cr['reviewStatus']} ({cr['approvals']}/{cr.get('requiredApprovals', '?')} "
        f"approvals){when}"
    )
    if cr.get("failure"):
        line += f"\n  failed: {cr['failure']['detail']}"
    if cr.get("appliedVersion"):
        late = f", {cr['lateMs']} ms late" if cr.get("lateMs") else ""
        line += f"\n  applied as version {cr['appliedVersion']} by {cr['appliedBy']}{late}"
    return line


def _write_note(status: int, body: dict[str, Any]) -> str:
    if status == 202:
        return " (stored; Kafka delivery pending, it will be delivered when Kafka is back)"
    return ""


def _plan_line(plan: dict[str, Any]) -> str:
    target = "fallthrough" if plan["target"] == "fallthrough" else f"rule {plan['target']['rule']}"
    steps = ", ".join(f"{s['percent']}%/{s['holdSeconds']}s" for s in plan["steps"])
    line = (
        f"rollout plan {plan['id']} of {plan['flag']} ({target}, variation "
        f"{plan['fromVariation']} → {plan['toVariation']}): {plan['status']}, at "
        f"{plan['currentPercent']}% (step {plan['currentStep'] + 1}/{len(plan['steps'])})\n"
        f"  steps: {steps}"
    )
    if plan.get("nextStepAt") and plan["status"] == "active":
        line += f"\n  next step {_time(plan['nextStepAt'])}"
    if plan.get("pausedReason"):
        line += f"\n  paused: {plan['pausedReason']}"
    return line


def handles(args: argparse.Namespace) -> bool:
    """True for the commands of this module (and ``audit`` with a governance filter)."""
    if args.command == "audit":
        return bool(getattr(args, "request_id", None) or getattr(args, "actor", None))
    return bool(args.command in COMMANDS)


def run(args: argparse.Namespace, client: Client) -> str | Any:
    return {
        "policy": _policy,
        "cr": _cr,
        "trigger": _trigger,
        "rollout": _rollout,
        "audit": _audit,
    }[args.command](args, client)


def _policy(args: argparse.Namespace, client: Client) -> str | Any:
    path = _env_path(args.env)
    if args.action == "show":
        _, body = client.call("GET", path)
    else:
        patch: dict[str, Any] = {}
        if args.required_approvals is not None:
            patch["requiredApprovals"] = args.required_approvals
        for field, value in (
            ("allowSelfApproval", args.allow_self_approval),
            ("requireComment", args.require_comment),
            ("critical", args.critical),
        ):
            if value is not None:
                patch[field] = value
        if not patch:
            raise CliError(
                "nothing to set: give --required-approvals, --[no-]allow-self-approval, "
                "--[no-]require-comment or --[no-]critical",
                EXIT_USAGE,
            )
        _, body = client.call("PATCH", path, patch, _comment_headers(args))
    if args.json:
        return body
    return (
        f"policy of {body['key']}: requiredApprovals {body['requiredApprovals']}, "
        f"allowSelfApproval {str(body['allowSelfApproval']).lower()}, requireComment "
        f"{str(body['requireComment']).lower()}, critical {str(body['critical']).lower()}"
    )


def _cr(args: argparse.Namespace, client: Client) -> str | Any:
    base = f"{_env_path(args.env)}/change-requests"
    if args.action == "list":
        query = {
            k: v
            for k, v in (
                ("status", args.status),
                ("reviewStatus", args.review_status),
                ("resource", args.resource),
            )
            if v
        }
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        _, body = client.call("GET", base + suffix)
        if args.json:
            return body
        rows = [
            [
                c["id"],
                c["resource"],
                c["status"],
                c["reviewStatus"],
                f"{c['approvals']}/{c['requiredApprovals']}",
                _time(c["executeAt"]) if c["executeAt"] else "-",
                c["author"],
            ]
            for c in body["items"]
        ]
        header = ["ID", "RESOURCE", "STATUS", "REVIEW", "APPROVALS", "EXECUTE AT", "AUTHOR"]
        return _table(rows, header) if rows else f"no change requests in {args.env}"
    if args.action == "create":
        change = _change(args)
        if change is None:
            raise CliError(
                "give the change: --patch JSON, --patch-file F, --item-file F or --delete",
                EXIT_USAGE,
            )
        body_in: dict[str, Any] = {"resource": args.resource, "change": change}
        if args.base_version is not None:
            body_in["baseVersion"] = args.base_version
        if args.description:
            body_in["description"] = args.description
        execute_at = _execute_at(args)
        if execute_at is not None:
            body_in["executeAt"] = execute_at
        _, body = client.call("POST", base, body_in, _comment_headers(args))
        return body if args.json else "created " + _cr_line(body)
    path = f"{base}/{_q(args.id)}"
    if args.action == "show":
        _, body = client.call("GET", path)
        return body if args.json else _cr_line(body)
    if args.action == "edit":
        edit: dict[str, Any] = {}
        change = _change(args)
        if change is not None:
            edit["change"] = change
        if args.base_version is not None:
            edit["baseVersion"] = args.base_version
        if args.description is not None:
            edit["description"] = args.description
        execute_at = _execute_at(args)
        if execute_at is not None:
            edit["executeAt"] = execute_at
        _, body = client.call("PATCH", path, edit, _comment_headers(args))
        return body if args.json else "edited (reviews cleared) " + _cr_line(body)
    if args.action in ("approve", "decline"):
        review = {"decision": args.action, "comment": args.comment}
        _, body = client.call("POST", f"{path}/reviews", review)
        return body if args.json else f"{args.action}d: " + _cr_line(body)
    if args.action == "apply":
        status, body = client.call("POST", f"{path}/apply")
        if args.json:
            return body
        return "applied: " + _cr_line(body["changeRequest"]) + _write_note(status, body)
    if args.action == "cancel":
        _, body = client.call("POST", f"{path}/cancel", None, _comment_headers(args))
        return body if args.json else "cancelled: " + _cr_line(body)
    raise CliError(f"unknown action {args.action}", EXIT_USAGE)  # pragma: no cover


def _trigger(args: argparse.Namespace, client: Client) -> str | Any:
    base = f"{_env_path(args.env)}/flags/{_q(args.flag)}/triggers"
    if args.action == "create":
        body_in: dict[str, Any] = {"action": args.state}
        if args.description:
            body_in["description"] = args.description
        _, body = client.call("POST", base, body_in, _comment_headers(args))
        if args.json:
            return body
        pending = (
            f"\nIt awaits approval ({body['reviewStatus']}) before it can be called."
            if body["reviewStatus"] != "approved"
            else ""
        )
        return (
            f"created trigger {body['id']} ({args.state}) for flag {args.flag} in {args.env}\n"
            f"  URL: {body['url']}\n"
            f"Call it with: curl -X POST {body['url']}\n"
            f"The URL is its secret and is shown only once: store it now.{pending}"
        )
    if args.action == "list":
        _, body = client.call("GET", base)
        if args.json:
            return body
        rows = [
            [
                t["id"],
                t["action"],
                "enabled" if t["enabled"] else "disabled",
                t["reviewStatus"],
                str(t["firedCount"]),
                _time(t["lastFiredAt"]),
                t["description"],
            ]
            for t in body["items"]
        ]
        header = ["ID", "ACTION", "STATE", "REVIEW", "FIRED", "LAST FIRED", "DESCRIPTION"]
        return _table(rows, header) if rows else f"no triggers on {args.flag}"
    path = f"{base}/{_q(args.id)}"
    if args.action in ("enable", "disable"):
        _, body = client.call(
            "PATCH", path, {"enabled": args.action == "enable"}, _comment_headers(args)
        )
        return body if args.json else f"trigger {args.id} {args.action}d"
    if args.action == "delete":
        client.call("DELETE", path, None, _comment_headers(args))
        return {"deleted": args.id} if args.json else f"deleted trigger {args.id}"
    if args.action in ("approve", "decline"):
        _, body = client.call(
            "POST", f"{path}/reviews", {"decision": args.action, "comment": args.comment}
        )
        return body if args.json else f"trigger {args.id}: review {body['reviewStatus']}"
    raise CliError(f"unknown action {args.action}", EXIT_USAGE)  # pragma: no cover


def _rollout(args: argparse.Namespace, client: Client) -> str | Any:
    if args.action == "list":
        _, body = client.call("GET", f"{_env_path(args.env)}/rollout-plans")
        if args.json:
            return body
        return "\n".join(_plan_line(p) for p in body["items"]) or f"no rollout plans in {args.env}"
    path = f"{_env_path(args.env)}/flags/{_q(args.flag)}/rollout-plan"
    if args.action == "start":
        plan: dict[str, Any] = {"steps": _steps(args.steps), "toVariation": args.to}
        if args.from_ is not None:
            plan["fromVariation"] = args.from_
        if args.rule is not None:
            plan["target"] = {"rule": args.rule}
        if args.start_at is not None:
            plan["startAt"] = int(args.start_at) if args.start_at.isdigit() else args.start_at
        _, body = client.call("PUT", path, plan, _comment_headers(args))
        return body if args.json else "started " + _plan_line(body)
    if args.action == "show":
        _, body = client.call("GET", path)
        return body if args.json else _plan_line(body)
    if args.action in ("approve", "decline"):
        _, body = client.call(
            "POST", f"{path}/reviews", {"decision": args.action, "comment": args.comment}
        )
        return body if args.json else _plan_line(body)
    if args.action == "stop":
        _, body = client.call("DELETE", path, None, _comment_headers(args))
        return body if args.json else _plan_line(body)
    status, body = client.call("POST", f"{path}/{args.action}", None, _comment_headers(args))
    if args.json:
        return body
    if args.action == "revert":
        return "reverted " + _plan_line(body["rolloutPlan"]) + _write_note(status, body)
    return _plan_line(body)


def _audit(args: argparse.Namespace, client: Client) -> str | Any:
    query: dict[str, Any] = {"limit": args.limit}
    if args.request_id:
        query["requestId"] = args.request_id
    if args.actor:
        query["actor"] = args.actor
    _, body = client.call("GET", f"{_env_path(args.env)}/audit?{urllib.parse.urlencode(query)}")
    if args.json:
        return body
    rows = [
        [
            datetime.fromtimestamp(e["timeMs"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            e["actor"],
            e["action"],
            f"{e['kind']} {e['key']}",
            str(e["version"]),
            e.get("comment") or "",
        ]
        for e in body["items"]
    ]
    header = ["WHEN", "WHO", "ACTION", "WHAT", "VERSION", "COMMENT"]
    return _table(rows, header) if rows else "no matching audit entries"


def add_commands(sub: Any) -> None:
    """Add the governance subcommands to ``flagstream admin``'s subparsers ``sub``."""
    audit = sub.choices["audit"]
    audit.add_argument("--request-id", help="only entries of this change request, trigger or plan")
    audit.add_argument("--actor", help="only entries by this actor (token name or trigger id)")

    pol = sub.add_parser("policy", help="an environment's change policy").add_subparsers(
        dest="action", required=True
    )
    s = pol.add_parser("show", help="show the policy")
    s.add_argument("env")
    s = pol.add_parser("set", help="change the policy (admin token)")
    s.add_argument("env")
    s.add_argument("--required-approvals", type=int, metavar="N", help="0..5")
    _bool_flag(s, "allow-self-approval", "authors may approve their own change requests")
    _bool_flag(s, "require-comment", "every change needs a comment")
    _bool_flag(s, "critical", "mark the environment critical (comments required, audited)")
    s.add_argument("--comment")

    cr = sub.add_parser("cr", help="change requests (approvals, scheduled changes)")
    crs = cr.add_subparsers(dest="action", required=True)

    def change_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--patch", help="a JSON merge patch, e.g. '{\"on\": false}'")
        p.add_argument("--patch-file", help="a merge patch from a JSON or YAML file")
        p.add_argument("--item-file", help="the full flag or segment from a JSON or YAML file")
        p.add_argument("--delete", action="store_true", help="delete the flag or segment")
        p.add_argument("--base-version", type=int, help="the version the change is based on")
        p.add_argument("--description")
        p.add_argument("--execute-at", help="apply at this time (RFC 3339 or epoch ms)")
        p.add_argument("--in", dest="in_", metavar="DURATION", help="apply in 90s, 10m, 2h, 1d")
        p.add_argument("--comment")

    c = crs.add_parser("create", help="propose a change")
    c.add_argument("env")
    c.add_argument("resource", help="flags/KEY or segments/KEY")
    change_options(c)
    c = crs.add_parser("edit", help="edit your change request (clears its reviews)")
    c.add_argument("env")
    c.add_argument("id")
    change_options(c)
    c = crs.add_parser("list", help="list change requests, newest first")
    c.add_argument("env")
    c.add_argument("--status", choices=["pending", "scheduled", "applied", "failed", "cancelled"])
    c.add_argument("--review-status", choices=["pending", "approved", "declined"])
    c.add_argument("--resource")
    for action, help_ in (
        ("show", "show a change request"),
        ("approve", "approve a change request"),
        ("decline", "decline a change request"),
        ("apply", "apply an approved change request now"),
        ("cancel", "cancel a change request"),
    ):
        c = crs.add_parser(action, help=help_)
        c.add_argument("env")
        c.add_argument("id")
        if action != "show" and action != "apply":
            c.add_argument("--comment")

    tr = sub.add_parser("trigger", help="flag triggers (URLs that turn a flag on or off)")
    trs = tr.add_subparsers(dest="action", required=True)
    c = trs.add_parser("create", help="create a trigger (prints its URL once)")
    c.add_argument("env")
    c.add_argument("flag")
    c.add_argument("state", choices=["on", "off"])
    c.add_argument("--description")
    c.add_argument("--comment")
    c = trs.add_parser("list", help="list a flag's triggers")
    c.add_argument("env")
    c.add_argument("flag")
    for action in ("enable", "disable", "delete", "approve", "decline"):
        c = trs.add_parser(action, help=f"{action} a trigger")
        c.add_argument("env")
        c.add_argument("flag")
        c.add_argument("id")
        c.add_argument("--comment")

    ro = sub.add_parser("rollout", help="progressive rollouts")
    ros = ro.add_subparsers(dest="action", required=True)
    c = ros.add_parser("start", help="start a progressive rollout of a flag")
    c.add_argument("env")
    c.add_argument("flag")
    c.add_argument("--to", type=int, required=True, help="the variation rolled out")
    c.add_argument("--from", dest="from_", type=int, help="the variation rolled back from")
    c.add_argument("--rule", help="a rule id (default: the fallthrough)")
    c.add_argument("--steps", required=True, help="PERCENT:HOLD_SECONDS,... e.g. 10:600,50:600,100")
    c.add_argument("--start-at", help="first step at this time (RFC 3339 or epoch ms)")
    c.add_argument("--comment")
    c = ros.add_parser("list", help="list rollout plans")
    c.add_argument("env")
    for action, help_ in (
        ("show", "show a flag's rollout plan"),
        ("pause", "pause it"),
        ("resume", "resume it from the flag as it is now"),
        ("revert", "write the flag back as it was before the plan"),
        ("stop", "stop it, leaving the flag as it is"),
        ("approve", "approve a plan awaiting approval"),
        ("decline", "decline a plan awaiting approval"),
    ):
        c = ros.add_parser(action, help=help_)
        c.add_argument("env")
        c.add_argument("flag")
        if action != "show":
            c.add_argument("--comment")
