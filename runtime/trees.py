"""A model's input and output structure as plain JSON, rebuilt from a closed set of types.

Artifacts store pytree structures in this format rather than as pytree's own serialisation,
whose type names loading would have to import. A node is one of

    {"leaf": null}
    {"list": [node, ...]}              {"tuple": [node, ...]}
    {"dict": [[key, node], ...]}       (keys are str or int)
    {"namedtuple": {"module": m, "qualname": q, "fields": [[name, node], ...]}}
    {"model_output": {"module": m, "qualname": q, "fields": [[name, node], ...]}}

(`model_output` is a Hugging Face `ModelOutput`; None is a leaf in torch's pytree). A structure
with any other node type is stored as `{"flat": leaves, "reason": why}`: the loaded module then
takes and returns flat lists.

`from_json` never imports or executes anything the JSON names. A namedtuple or ModelOutput
class is used only when its module is already imported (looked up in `sys.modules`, attributes
read without `__getattr__`) and the class found is of that kind with those fields; otherwise the
node becomes a plain tuple (namedtuple) or dict (ModelOutput) and a note says so.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections import namedtuple

from torch.utils import _pytree as pytree

KEY_TYPES = (str, int)


def to_json(spec: pytree.TreeSpec) -> dict:
    """The JSON form of `spec`, or `{"flat": ...}` when it holds another node type."""
    try:
        return _node(spec)
    except ValueError as exc:
        return {"flat": spec.num_leaves, "reason": str(exc)}


def _node(spec: pytree.TreeSpec) -> dict:
    if spec.is_leaf():
        return {"leaf": None}
    children = [_node(child) for child in spec.children()]
    if spec.type in (list, tuple):
        return {spec.type.__name__: children}
    if spec.type is dict:
        if not all(type(key) in KEY_TYPES for key in spec.context):
            raise ValueError(f"dict keys {spec.context!r} are not all str or int")
        return {"dict": [[key, child] for key, child in zip(spec.context, children, strict=True)]}
    if spec.type is namedtuple:
        cls, kind, names = spec.context, "namedtuple", spec.context._fields
    elif is_model_output(spec.type):
        cls, kind, names = spec.type, "model_output", spec.context
    else:
        raise ValueError(
            f"{getattr(spec.type, '__qualname__', spec.type)} is not a list, tuple, dict, "
            "namedtuple or Hugging Face ModelOutput"
        )
    fields = [[name, child] for name, child in zip(names, children, strict=True)]
    return {kind: {"module": cls.__module__, "qualname": cls.__qualname__, "fields": fields}}


def is_model_output(cls: object) -> bool:
    """Whether `cls` is a Hugging Face `ModelOutput` class (told without importing transformers)."""
    return isinstance(cls, type) and any(
        base.__name__ == "ModelOutput" and base.__module__.startswith("transformers.")
        for base in cls.__mro__
    )


def from_json(data: object, leaves: int, notes: list[str]) -> pytree.TreeSpec | None:
    """The TreeSpec that `to_json` stored (None for a flat one), which must hold `leaves`
    leaves; `ValueError` for anything else. Appends a note for each class not rebuilt."""
    if isinstance(data, dict) and "flat" in data:
        if set(data) != {"flat", "reason"} or data["flat"] != leaves:
            raise ValueError(f"a flat structure must be {{flat: {leaves}, reason}}: {data!r:.120}")
        return None
    spec = _spec(data, notes)
    if spec.num_leaves != leaves:
        raise ValueError(
            f"the structure holds {spec.num_leaves} leaves; the signature has {leaves}"
        )
    return spec


def _spec(data: object, notes: list[str]) -> pytree.TreeSpec:
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError(f"a structure node is an object with one key, not {data!r:.80}")
    ((kind, value),) = data.items()
    if kind == "leaf" and value is None:
        return pytree.treespec_leaf()
    if kind in ("list", "tuple") and isinstance(value, list):
        return pytree.TreeSpec(
            list if kind == "list" else tuple, None, [_spec(v, notes) for v in value]
        )
    if kind == "dict":
        keys, children = _pairs(value, KEY_TYPES, notes)
        return pytree.TreeSpec(dict, keys, children)
    if kind in ("namedtuple", "model_output") and isinstance(value, dict):
        return _class_node(kind, value, notes)
    raise ValueError(f"unknown structure node {kind!r} (or a malformed {kind!r} node)")


def _pairs(value: object, key_types: tuple, notes: list[str]) -> tuple[list, list]:
    if not isinstance(value, list) or not all(
        isinstance(p, list) and len(p) == 2 and type(p[0]) in key_types for p in value
    ):
        raise ValueError(f"expected a list of [key, node] pairs, got {value!r:.80}")
    keys = [key for key, _ in value]
    if len(set(keys)) != len(keys):
        raise ValueError(f"repeated keys in {keys!r:.80}")
    return keys, [_spec(node, notes) for _, node in value]


def _class_node(kind: str, value: dict, notes: list[str]) -> pytree.TreeSpec:
    module, qualname = value.get("module"), value.get("qualname")
    if set(value) != {"module", "qualname", "fields"} or not (
        isinstance(module, str) and isinstance(qualname, str)
    ):
        raise ValueError(f"a {kind} node is {{module, qualname, fields}}, got {value!r:.80}")
    names, children = _pairs(value["fields"], (str,), notes)
    cls = imported_class(module, qualname)
    if kind == "namedtuple":
        if (
            cls is not None
            and pytree.is_namedtuple_class(cls)
            and list(getattr(cls, "_fields", ())) == names
        ):
            return pytree.TreeSpec(namedtuple, cls, children)
        fallback: type = tuple
    else:
        if _is_registered_output(cls) and set(names) <= _field_names(cls):
            return pytree.TreeSpec(cls, names, children)
        fallback = dict
    notes.append(
        f"{module}.{qualname} is not imported in this process (or has other fields), so this "
        f"{kind} is returned as a plain {fallback.__name__}; import {module} before loading "
        "to get the class"
    )
    return pytree.TreeSpec(fallback, names if fallback is dict else None, children)


def _is_registered_output(cls: type | None) -> bool:
    return is_model_output(cls) and dataclasses.is_dataclass(cls) and cls in pytree.SUPPORTED_NODES


def _field_names(cls: type | None) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()


def imported_class(module: str, qualname: str) -> type | None:
    """The class `module.qualname` if `module` is already imported, else None; reads module
    and class dictionaries directly, so nothing is imported or computed."""
    obj: object = sys.modules.get(module)
    if not isinstance(obj, types.ModuleType):
        return None
    for part in qualname.split("."):
        if not isinstance(obj, types.ModuleType | type):
            return None
        obj = vars(obj).get(part)
    return obj if isinstance(obj, type) else None
