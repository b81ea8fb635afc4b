"""Reading recipe YAML: PyYAML's safe loader with two fixes for hand-written files.

- Numbers such as ``2e-3`` or ``1e4`` are floats, as in YAML 1.2. PyYAML follows
  YAML 1.1, which needs a dot (``2.0e-3``) and otherwise returns the *string* ``"2e-3"``.
- A key given twice in one mapping is an error. PyYAML keeps the last one silently, so
  a second ``trainer:`` section would replace the whole first one.
"""
from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

# YAML 1.2's core-schema float, plus PyYAML's 1.1 forms (``1_000.5``, ``.inf``, ``.nan``).
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` reading ``2e-3`` as a float and refusing duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Hashable, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *anchor`` may be overridden by design
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"key {key!r} is given a second time (first at line {first[key].start_mark.line + 1}); "
                    "YAML would keep only the last one: merge the two into one entry",
                    key_node.start_mark,
                )
            first[key] = key_node
        return super().construct_mapping(node, deep=deep)


# Cleared first so the 1.2 pattern replaces (not follows) the 1.1 float resolver for these characters.
RecipeLoader.yaml_implicit_resolvers = {
    ch: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text: str, source: str) -> Any:
    """Parse ``text`` with ``RecipeLoader``; ``ValueError`` naming ``source`` when it is not valid YAML."""
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 (RecipeLoader is a SafeLoader)
    except yaml.MarkedYAMLError as err:
        where = f"line {err.problem_mark.line + 1}, column {err.problem_mark.column + 1}: " if err.problem_mark else ""
        context = f" ({err.context} at line {err.context_mark.line + 1})" if err.context and err.context_mark else ""
        raise ValueError(f"{source} is not valid YAML: {where}{err.problem}{context}") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{source} is not valid YAML: {err}") from err


def read_yaml_file(path: str | Path) -> Any:
    """Read a YAML file with ``load_yaml``; a file that is not UTF-8 text is a ``ValueError`` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a text file (byte {err.start} is not UTF-8); a recipe is a YAML text file") from err
    return load_yaml(text, str(path))
