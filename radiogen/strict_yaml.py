"""The one YAML reader for every file radiogen reads (experiments, sweeps): yaml.SafeLoader, and a key given twice
is an error naming its line instead of PyYAML's silent last-one-wins (an appended `max_steps:` once turned a
60-step sweep into a 5000-step one). Callers add the file's path and raise their own error type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class DuplicateKey(ValueError):
    """A mapping repeats a key; the message names the key and its line."""


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects duplicate keys."""


def _mapping_no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise DuplicateKey(f"duplicate key '{key}' at line {key_node.start_mark.line + 1}; keep only one")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_duplicates)


def parse_yaml(text: str) -> Any:
    """Parse YAML text safely; raises DuplicateKey for a repeated key and yaml.YAMLError for bad syntax."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_mapping(path: Path, error: type[Exception], what: str) -> dict:
    """A YAML file whose top level is a mapping (empty file: {}); every failure raises `error` naming the file:
    unreadable, bad syntax, a duplicate key, or another top level."""
    try:
        text = path.read_text()
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        data = parse_yaml(text) or {}
    except yaml.YAMLError as err:
        raise error(f"{path} is not valid YAML: {err}") from None
    except DuplicateKey as err:
        raise error(f"{path}: {err}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
