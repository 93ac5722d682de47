"""Reading a user's YAML with bounds: the safe loader, a size cap and a cap on expanded nodes.

YAML anchors and aliases let 533 bytes stand for billions of nodes (`a: &a [x, x, ...]`,
`b: &b [*a, *a, ...]`, ...): the parser builds them cheaply as shared objects, but anything that
walks the result (filling templates, JSON, a copy) expands every alias. `load_yaml` composes
the document's node graph first and counts its nodes as if every alias were expanded (each
node counted once per path that reaches it, computed with a memo, so the count itself is
cheap); over `Limits.yaml_nodes` it refuses the file before building any Python object. An
alias that contains itself is refused too. Only the safe loader's types are built (no Python
tags). This module knows nothing about what the document means (evals/evalset.py, variants.py).
"""

from __future__ import annotations

from adapters.errors import LoraEqError
from adapters.limits import Limits, env_name


def load_yaml(text: str, where: str, limits: Limits | None = None) -> object:
    """The document in `text`, or a LoraEqError naming `where` and the limit it passes."""
    import yaml

    limits = limits or Limits.from_env()
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.yaml_bytes:
        raise LoraEqError(f"{where}: {size:,} bytes of YAML, over the limit of {limits.yaml_bytes:,} "
                          f"({env_name('yaml_bytes')})")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            expanded = expanded_nodes(node, limits.yaml_nodes)
        except LoraEqError as e:
            raise LoraEqError(f"{where}: {e}") from None
        if expanded > limits.yaml_nodes:
            raise LoraEqError(f"{where}: its aliases expand to more than {limits.yaml_nodes:,} YAML nodes, over "
                              f"the limit ({env_name('yaml_nodes')})")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LoraEqError(f"{where}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise LoraEqError(f"{where}: the YAML is nested too deeply") from None
    finally:
        loader.dispose()


def expanded_nodes(root, cap: int) -> int:
    """How many nodes the graph under `root` has once every alias is expanded (stops counting
    past `cap`); a LoraEqError for an alias that contains itself."""
    import yaml

    counts: dict[int, int] = {}
    open_: set[int] = set()

    def count(node) -> int:
        key = id(node)
        if key in counts:
            return counts[key]
        if key in open_:
            raise LoraEqError("a YAML alias refers to a node that contains it")
        open_.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += count(child)
            if total > cap:
                break
        open_.discard(key)
        counts[key] = total
        return total

    return count(root)
