"""Checks a composed config against the schemas and writes the typed groups back."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, ValidationError

from quark.core.errors import ConfigError, override_key


def validate(cfg: DictConfig) -> None:
    """Check every group of `cfg`; replace each with its typed, resolved version.

    Raises:
        ConfigError: the first unknown key, wrong type, missing value, out-of-range value or
            broken cross-field rule, naming the full key and what is allowed.
    """
    from quark.core.schemas.launch import GROUP_SCHEMAS, TOP_LEVEL_KEYS, TopLevelSchema
    from quark.core.step_registry import STEP_SCHEMAS

    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                str(key),
                "no such key",
                f"keys allowed at the top level: {', '.join(TOP_LEVEL_KEYS)}",
            )
    step_name = _step_name(cfg, STEP_SCHEMAS)
    typed: dict[str, DictConfig] = {"step": check_group("step", cfg.step, STEP_SCHEMAS[step_name])}
    for group, schema in GROUP_SCHEMAS.items():
        if group in cfg and cfg[group] is not None:
            typed[group] = check_group(group, cfg[group], schema)
    top = {key: cfg[key] for key in TopLevelSchema.__dataclass_fields__ if key in cfg}
    top_typed = check_group("", OmegaConf.create(top), TopLevelSchema)
    with open_dict(cfg):
        for group, node in typed.items():
            cfg[group] = node
        for key in top_typed:
            cfg[key] = top_typed[key]


def allowed_keys(path: str) -> list[str]:
    """The keys the schema allows under `path` ('' is the top level, `data.tokenizer` a nested
    section), or [] if unknown."""
    from quark.core.schemas.launch import GROUP_SCHEMAS, TOP_LEVEL_KEYS
    from quark.core.step_registry import STEP_SCHEMAS

    if path == "":
        return list(TOP_LEVEL_KEYS)
    if path == "step":
        names: set[str] = set()
        for step_schema in STEP_SCHEMAS.values():
            names.update(f.name for f in dataclasses.fields(step_schema))
        return sorted(names)
    group, *rest = override_key(path).split(".")
    schema: type | None = GROUP_SCHEMAS.get(group)
    for part in rest:
        if schema is None:
            return []
        if part.isdigit():
            continue  # an item of a list of sections
        hint = typing.get_type_hints(schema).get(part)
        schema = _dataclass_in(hint)
    return [f.name for f in dataclasses.fields(schema)] if schema else []


def _step_name(cfg: DictConfig, step_schemas: dict[str, type]) -> str:
    if "step" not in cfg or cfg.step is None or "name" not in cfg.step:
        raise ConfigError("step", "not set", f"choose one: step={'|'.join(step_schemas)}")
    name = str(cfg.step.name)
    if name not in step_schemas:
        raise ConfigError(
            "step.name", f"'{name}' is not a built step", f"available: {', '.join(step_schemas)}"
        )
    return name


def check_group(prefix: str, node: Any, schema: type) -> DictConfig:
    def key_of(sub: object) -> str:
        return f"{prefix}.{sub}" if prefix else str(sub)

    for missing in sorted(OmegaConf.missing_keys(node)):
        # missing_keys names keys from the root of the config the node belongs to
        raise ConfigError(
            missing, "no value given (???)", f"set it on the command line, e.g. {missing}=..."
        )
    data = OmegaConf.to_container(node, resolve=True)
    _check_booleans(data, schema, key_of)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), data)
    except ConfigKeyError as exc:
        fields = ", ".join(f.name for f in dataclasses.fields(schema))
        raise ConfigError(
            key_of(exc.full_key),
            "no such key",
            f"keys allowed in {prefix or 'the top level'}: {fields}",
        ) from None
    except ValidationError as exc:
        raise ConfigError(
            key_of(exc.full_key), _type_problem(exc), _expected(schema, str(exc.full_key))
        ) from None
    assert isinstance(merged, DictConfig)
    for missing in sorted(OmegaConf.missing_keys(merged)):
        raise ConfigError(
            key_of(missing), "no value given (???)", f"set it, e.g. {key_of(missing)}=..."
        )
    _check_rules(merged, schema, key_of)
    try:
        instance = OmegaConf.to_object(merged)
    except MissingMandatoryValue as exc:  # a nested dataclass with a missing field
        raise ConfigError(
            key_of(exc.full_key), "no value given (???)", "set it on the command line"
        ) from None
    check = getattr(instance, "check", None)
    if callable(check):
        check()
    return merged


def _check_rules(node: DictConfig, schema: type, key_of: typing.Callable[[object], str]) -> None:
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        value = node[f.name]
        nested = _dataclass_in(hints.get(f.name))
        if nested is not None and value is not None:
            # a nested section, or a list of them: check their rules under their own keys
            items = list(enumerate(value)) if OmegaConf.is_list(value) else [(None, value)]
            for index, item in items:
                sub = f"{f.name}.{index}" if index is not None else f.name
                _check_rules(item, nested, _prefixed(key_of, sub))
            continue
        rules = f.metadata
        if value is None or not rules:
            continue
        key = key_of(f.name)
        bounds = [(op, rules[op]) for op in ("ge", "gt", "le", "lt") if op in rules]
        for op, bound in bounds:
            ok = {
                "ge": value >= bound,
                "gt": value > bound,
                "le": value <= bound,
                "lt": value < bound,
            }[op]
            if not ok:
                raise ConfigError(
                    key, f"{value} is out of range", f"allowed: {_range_text(bounds)}"
                )
        if "choices" in rules and value not in rules["choices"]:
            raise ConfigError(
                key, f"'{value}' is not allowed", f"allowed: {', '.join(rules['choices'])}"
            )
        if "pattern" in rules and not re.match(rules["pattern"], str(value)):
            raise ConfigError(
                key, f"'{value}' is not allowed", f"allowed: {rules['pattern_description']}"
            )


def _check_booleans(data: Any, schema: type, key_of: typing.Callable[[object], str]) -> None:
    """Boolean keys hold true or false only: OmegaConf would take 2 as true and "no" as false."""
    if not isinstance(data, dict):
        return
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints.get(f.name)
        nested = _dataclass_in(hint)
        if nested is not None:
            items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            for index, item in items:
                sub = f"{f.name}.{index}" if index is not None else f.name
                _check_booleans(item, nested, _prefixed(key_of, sub))
            continue
        kinds = set(typing.get_args(hint)) or {hint}
        if bool in kinds and not isinstance(value, bool) and value is not None:
            raise ConfigError(
                key_of(f.name), f"{value!r} is not a boolean", "allowed: true or false"
            )


def _prefixed(key_of: typing.Callable[[object], str], sub: str) -> typing.Callable[[object], str]:
    def nested_key(key: object) -> str:
        return key_of(f"{sub}.{key}")

    return nested_key


def _dataclass_in(hint: object) -> type | None:
    """The dataclass a field holds (directly or as list items), or None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def _range_text(bounds: list[tuple[str, float]]) -> str:
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{symbols[op]} {bound}" for op, bound in bounds)


def _type_problem(exc: ValidationError) -> str:
    message = str(exc).splitlines()[0]
    match = re.match(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", message)
    if match:
        return f"'{match.group(1)}' is not a valid {match.group(3).lower()}"
    return message


def _expected(schema: type, key: str) -> str:
    hints = typing.get_type_hints(schema)
    hint = hints.get(key.split(".")[0])
    if hint is None:
        return ""
    text = getattr(hint, "__name__", None) or str(hint)
    return f"expected {text.replace('typing.', '').replace('NoneType', 'null')}"
