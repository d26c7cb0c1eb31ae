"""Regenerate (or --check) the Inputs/Outputs tables of every module README.

The tables live between ``<!-- BEGIN_TF_DOCS -->`` and ``<!-- END_TF_DOCS -->`` (the
terraform-docs markers, so that tool can take over where it is installed). Source of truth:
the variable and output blocks, parsed with python-hcl2 (either the python-hcl2 or the
bc-python-hcl2 flavour of the ``hcl2`` package).

    python deploy/terraform/readme_tables.py          # rewrite the tables
    python deploy/terraform/readme_tables.py --check  # exit 1 if a table is stale
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hcl2

# Both distributions of the ``hcl2`` package provide loads(); only one declares it exported.
hcl2_loads: Callable[[str], dict[str, Any]] = hcl2.__dict__["loads"]

HERE = Path(__file__).resolve().parent
DIRS = [
    HERE / "modules" / "relay-region",
    HERE / "modules" / "publisher",
    HERE / "modules" / "prometheus-sidecar",
    HERE / "examples" / "multi-region",
]
BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"
META = {"__start_line__", "__end_line__", "__is_block__", "__comments__", "__inline_comments__"}
WRAPPED = isinstance(hcl2_loads("a = 1\n")["a"], list)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)
            return value if isinstance(value, str) else text
        except ValueError:
            return text[1:-1]
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _unquote(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _clean(v) for k, v in value.items() if k not in META}
    return value


def _attr(body: dict[str, Any], name: str) -> Any:
    value = body[name]
    if WRAPPED and isinstance(value, list) and len(value) == 1:
        value = value[0]
    return _clean(value)


def _blocks(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for entry in hcl2_loads(path.read_text()).get(kind, []):
            for label, body in entry.items():
                out[_unquote(label)] = body
    return out


def _type(body: dict[str, Any]) -> str:
    text = str(_attr(body, "type"))
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1]
    text = " ".join(text.split())
    for compound in ("map(object(", "list(object(", "object("):
        if text.startswith(compound):
            return compound + "{...})" + ")" * (compound.count("(") - 1)
    return text


def _default(body: dict[str, Any]) -> str:
    if "default" not in body:
        return "**required**"
    value = _attr(body, "default")
    text = (
        "null"
        if value is None
        else json.dumps(value)
        if not isinstance(value, str)
        else f'"{value}"'
    )
    if len(text) > 60:
        text = text[:57] + "..."
    return f"`{text}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render(directory: Path) -> str:
    variables = _blocks(directory, "variable")
    outputs = _blocks(directory, "output")
    lines = ["### Inputs", "", "| Name | Type | Default | Description |", "|---|---|---|---|"]
    for name in sorted(variables, key=lambda n: ("default" in variables[n], n)):
        body = variables[name]
        description = _cell(_attr(body, "description"))
        lines.append(f"| `{name}` | `{_cell(_type(body))}` | {_default(body)} | {description} |")
    lines += ["", "### Outputs", "", "| Name | Description |", "|---|---|"]
    for name in sorted(outputs):
        lines.append(f"| `{name}` | {_cell(_attr(outputs[name], 'description'))} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for directory in DIRS:
        readme = directory / "README.md"
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            print(f"{readme}: missing {BEGIN} / {END} markers", file=sys.stderr)
            stale.append(readme)
            continue
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = f"{head}{BEGIN}\n{render(directory)}\n{END}{tail}"
        if new != text:
            stale.append(readme)
            if not check:
                readme.write_text(new)
                print(f"updated {readme.relative_to(HERE)}")
    if check and stale:
        for readme in stale:
            print(
                f"stale tables: {readme.relative_to(HERE)} (run: python {Path(__file__).name})",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
