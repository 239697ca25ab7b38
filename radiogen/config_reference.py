"""The configuration reference, generated from the config dataclasses: `radiogen config --reference`.

Every field of every slice (data, generator, discriminator, loss, optim, train) with its type, its default and
the docstring written under it in radiogen/config.py (read from the source: Python keeps no attribute
docstrings at run time). docs/config.md is this output; a test regenerates it and fails when they differ.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing

from . import config as config_module
from .config import ExperimentConfig


def field_docs(cls: type) -> dict[str, str]:
    """{field: the string literal right below its annotation} of a dataclass, from its source."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for stmt, after in zip(body, body[1:]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def type_text(tp: typing.Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " \\| ".join(f"`{v}`" for v in typing.get_args(tp))
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    return f"`{text}`".replace("|", "\\|")


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def reference_markdown() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the config dataclasses in `radiogen/config.py` by `radiogen config --reference` "
             "(a test keeps this file equal to its output). An experiment YAML sets any of these per slice; "
             "`--set slice.field=value` overrides one on the command line; `extends: other.yaml` inherits a file.",
             ""]
    top = typing.get_type_hints(ExperimentConfig, vars(config_module))
    top_docs = field_docs(ExperimentConfig)
    for slice_field in dataclasses.fields(ExperimentConfig):
        cls = top[slice_field.name]
        if not dataclasses.is_dataclass(cls):
            continue
        hints = typing.get_type_hints(cls, vars(config_module))
        docs = field_docs(cls)
        lines += [f"## `{slice_field.name}`: {cell(inspect.cleandoc(cls.__doc__ or ''))}", "",
                  f"{cell(top_docs.get(slice_field.name, ''))}".strip(), "",
                  "| field | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            lines.append(f"| `{slice_field.name}.{f.name}` | {type_text(hints[f.name])} | `{default!r}` | "
                         f"{cell(docs.get(f.name, ''))} |")
        lines.append("")
    return "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1])) + "\n"
