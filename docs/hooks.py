"""MkDocs hooks: the reference pages whose tables come from the code, so they cannot drift from it.

A page holds a marker such as `<!-- generated: configuration -->`, which the build replaces with a table made
from the configuration dataclasses (and config.yaml's comment for each key), the `htp` argparse parser, the
service's OpenAPI schema, or the benchmarks' own docstrings. A key config.yaml does not describe, or a benchmark
without a docstring, fails the build. The benchmark result files are published beside the pages, so the
Results pages link each one.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's packages and benchmarks/, as `python -m` sees them

RESULTS = ROOT / "benchmarks" / "results"


def _yaml_comments() -> dict[str, str]:
    """config.yaml's comment for each `section.key` (continuation comment lines joined), its top-level keys too."""
    comments: dict[str, str] = {}
    section, last = "", ""
    for line in (ROOT / "config.yaml").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^( *)([a-z_0-9]+):(.*?)(?:#\s?(.*))?$", line)
        if match and not line.lstrip().startswith("#"):
            indent, key, _value, comment = match.groups()
            if not indent:
                section = key
            last = f"{section}.{key}" if indent else key
            comments[last] = (comment or "").strip()
        elif line.strip().startswith("#") and last and line.startswith(" "):
            comments[last] = f"{comments[last]} {line.strip().lstrip('#').strip()}".strip()
    return comments


def _shown(value: Any) -> str:
    """A default as YAML spells it, in code quotes."""
    if isinstance(value, tuple):
        value = list(value)
    return f"`{yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}`"


def _default(field: Any) -> Any:
    if field.default is not MISSING:
        return field.default
    return field.default_factory()


def configuration_reference() -> str:
    """One table per section of `pipeline.config.Config`: key, built-in default, config.yaml's value, meaning."""
    from pipeline.config import Config

    comments = _yaml_comments()
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    out: list[str] = []
    scalars = [f for f in fields(Config) if not is_dataclass(_default(f))]
    for section in [f for f in fields(Config) if is_dataclass(_default(f))]:
        kind = type(_default(section))
        out += [
            f"### `{section.name}`",
            "",
            (kind.__doc__ or "").strip().splitlines()[0],
            "",
            "| key | default | config.yaml | what it does |",
            "|---|---|---|---|",
        ]
        for field in fields(kind):
            name = f"{section.name}.{field.name}"
            if name not in comments:
                raise ValueError(f"config.yaml does not list {name}: every key is listed there, with a comment")
            value = (shipped.get(section.name) or {}).get(field.name)
            meaning = (comments[name] or "(see the section)").replace("|", "\\|")
            out.append(f"| `{name}` | {_shown(_default(field))} | {_shown(value)} | {meaning} |")
        out.append("")
    for field in scalars:
        out += [f"### `{field.name}`", "", f"Default {_shown(_default(field))}: {comments.get(field.name, '')}", ""]
    return "\n".join(out)


def cli_reference() -> str:
    """Every `htp` subcommand with its usage line and its arguments, from the parser the command runs."""
    from pipeline.cli import parser

    top = parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    out = [f"`{top.prog}`: {top.description}", ""]
    for name, sub in commands.choices.items():
        usage = " ".join(sub.format_usage().split())
        out += [f"### `htp {name}`", "", helps.get(name) or "", "", f"```text\n{usage}\n```", ""]
        rows = [
            action
            for action in sub._actions
            if not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS
        ]
        if rows:
            out += ["| argument | default | what it does |", "|---|---|---|"]
            for action in rows:
                flags = ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.dest}`"
                default = "" if action.default in (None, False, argparse.SUPPRESS) else f"`{action.default}`"
                text = (action.help or "").replace("|", "\\|") % {"default": action.default, "prog": sub.prog}
                out.append(f"| {flags} | {default} | {text} |")
            out.append("")
    return "\n".join(out)


def http_reference() -> str:
    """Every route of `htp serve` from the app's own OpenAPI schema: method, path, parameters, body, summary."""
    from fastapi.testclient import TestClient

    from htp import EncoderConfig
    from htp.config import OPTIONAL_KEYS
    from indexes.store import open_index
    from pipeline.config import Config, ServeConfig
    from pipeline.service.app import create_app

    index = ROOT / "tests" / "fixtures" / "landed-index"  # any index: the routes do not depend on it
    encoder = EncoderConfig.from_dict({**OPTIONAL_KEYS, **open_index(index).manifest.encoder})
    config = Config(encoder=encoder, serve=ServeConfig(warm_up=False))  # the index's own encoder, never loaded
    with TestClient(create_app(index, config)) as client:
        schema = client.get("/openapi.json").json()
    out = ["| method | path | parameters | body | what it does |", "|---|---|---|---|---|"]
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            params = ", ".join(
                f"`{p['name']}`" + ("" if p.get("required") else "?") for p in operation.get("parameters", [])
            )
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            body_name = body.get("$ref", "").rsplit("/", 1)[-1]
            summary = " ".join((operation.get("description") or operation.get("summary") or "").split())
            out.append(f"| {method.upper()} | `{path}` | {params} | {body_name and f'`{body_name}`'} | {summary} |")
    out += ["", "Request bodies:", ""]
    for name, model in schema.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            props = ", ".join(f"`{key}`" for key in model.get("properties", {}))
            out.append(f"- `{name}`: {props}. {' '.join((model.get('description') or '').split())}")
    return "\n".join(out)


def benchmark_list() -> str:
    """Every benchmark module with the first line of its docstring and the result files it writes by default."""
    out = ["| benchmark | what it measures | default result file |", "|---|---|---|"]
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree)
        if not doc:
            raise ValueError(f"benchmarks/{path.name} has no docstring saying what it measures")
        first = " ".join(doc.split("\n\n")[0].split())
        found = re.search(r"benchmarks/results/([\w./-]+)\"", path.read_text(encoding="utf-8"))
        result = ""
        if found:
            name = found.group(1)
            written = [c for c in (name, f"{name}.md", f"{name}/table.md") if (RESULTS / c).is_file()]
            result = f"[`{written[0]}`](files/{written[0]})" if written else f"`{name}` (no result file yet)"
        out.append(f"| `python -m benchmarks.{path.stem}` | {first} | {result} |")
    return "\n".join(out)


MARKERS = {
    "<!-- generated: configuration -->": configuration_reference,
    "<!-- generated: cli -->": cli_reference,
    "<!-- generated: http -->": http_reference,
    "<!-- generated: benchmarks -->": benchmark_list,
}


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace each marker on a page with the table it names."""
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Publish every benchmark result file under results/files/, as the Results pages link them."""
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file():
            uri = f"results/files/{path.relative_to(RESULTS).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
