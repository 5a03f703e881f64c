"""Reading and checking a pipeline config file: strict YAML, the JSON schema, numbers as numbers.

The schema (``workflow/schemas/config.schema.yaml``) checks the shape of the whole config; its part for
a gradient method's config is generated from the option declarations (:data:`mei_core.options.METHOD_OPTIONS`)
when it is read. Kinds (objective kinds, demo kinds) check their own keys where they are defined.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..config import check_numbers_are_numbers
from ..errors import MEIConfigError
from ..options import method_schema

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class _StrictLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (plain YAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise MEIConfigError(f"{key_node.start_mark.name}:{line}: duplicate key {key!r} (e.g. two methods with the same name)")
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def check_config_file(path: str | Path) -> dict:
    """Read a config file with duplicate-key detection."""
    path = Path(path)
    try:
        with open(path) as handle:
            return yaml.load(handle, Loader=_StrictLoader) or {}
    except FileNotFoundError:
        raise MEIConfigError(f"config file {str(path)!r} not found") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise MEIConfigError(f"config file {where}: not valid YAML: {problem}") from None


def _dotted(path: Any) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def read_schema(schema_path: str | Path = SCHEMA) -> dict:
    """The config schema: the YAML file with the gradient method's part generated from its options."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    schema["$defs"]["gradient_method_config"] = method_schema()
    return schema


def validate_config(config: dict, schema_path: str | Path = SCHEMA) -> None:
    """JSON-schema check of the config with a message naming the key; fills schema defaults."""
    for name, method in (config.get("methods") or {}).items():
        if isinstance(method, Mapping):
            check_numbers_are_numbers(method.get("config"), f"methods.{name}.config")
    schema = read_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), list(map(str, e.absolute_path))))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        key = _dotted(error.absolute_path)
        if error.validator == "additionalProperties" and error.validator_value is False:
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            raise MEIConfigError(f"config key {key + '.' if error.absolute_path else ''}{extra[0]}: unknown key; known: {', '.join(sorted(error.schema.get('properties', {})))}")
        if error.validator in ("oneOf", "anyOf") and "description" in error.schema:
            raise MEIConfigError(f"config key {key}: expected {error.schema['description']}")
        raise MEIConfigError(f"config key {key}: {error.message}")
    for key, spec in schema["properties"].items():
        if "default" in spec:
            config.setdefault(key, spec["default"])
