"""YAML for untrusted files: the safe loader plus limits on depth and alias expansion.

PyYAML's ``safe_load`` builds no arbitrary objects, but it happily returns a structure in
which aliases share nodes: a 1 KB "billion laughs" document (nine levels of nine aliases)
expands to hundreds of millions of values as soon as anything walks it. :func:`load_yaml`
composes the node graph first, measures how many nodes the document would have with every
alias expanded (linear time, shared nodes counted once per use), and refuses it when
aliases add more than ``max_alias_nodes`` nodes, when it nests deeper than ``max_depth``, or
when an alias refers to its own ancestor (a cycle). Only then are Python values built.
"""

from __future__ import annotations

from typing import Any

import yaml

from conceptlens.errors import ConceptlensError

__all__ = ["MAX_ALIAS_NODES", "MAX_DEPTH", "YamlError", "load_yaml"]

#: How many nodes aliases may add to a document beyond its own (expanded minus written).
MAX_ALIAS_NODES = 100_000
#: Deepest nesting of sequences and mappings accepted.
MAX_DEPTH = 100


class YamlError(ConceptlensError, ValueError):
    """A YAML text is malformed, or exceeds a safety limit; the message names the source.

    Attributes:
        problem: What is wrong, without the location.
        source: The file (or description) at fault.
        line: 1-based line of the problem, when known.
    """

    def __init__(self, problem: str, *, source: str, line: int | None = None) -> None:
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {problem}")
        self.problem = problem
        self.source = source
        self.line = line


def load_yaml(text: str, *, source: str = "<yaml>", max_alias_nodes: int = MAX_ALIAS_NODES,
              max_depth: int = MAX_DEPTH) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document safely; returns ``(data, root_node)``.

    The root node (``None`` for an empty document) carries line marks for error messages.

    Raises:
        YamlError: Invalid YAML, more than one document, nesting deeper than ``max_depth``,
            a recursive alias, or aliases expanding to more than ``max_alias_nodes`` extra
            nodes. The message starts with ``source``.

    Examples:
        >>> load_yaml("a: [1, 2]")[0]
        {'a': [1, 2]}
        >>> bomb = "a: &a [x, x]\\nb: &b [*a, *a]\\nc: [*b, *b]"
        >>> try:
        ...     load_yaml(bomb, max_alias_nodes=5)
        ... except YamlError as err:
        ...     print(err)
        <yaml>, line 3: aliases expand the document beyond the limit of 5 extra nodes (a "billion laughs" document?)
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_expansion(root, source=source, max_alias_nodes=max_alias_nodes,
                         max_depth=max_depth)
        return loader.construct_document(root), root
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        raise YamlError(f"invalid YAML: {' '.join(str(problem).split())}", source=source,
                        line=line) from None
    except RecursionError:
        raise YamlError(f"YAML nested too deeply (limit {max_depth} levels)",
                        source=source) from None
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node, *, source: str, max_alias_nodes: int,
                     max_depth: int) -> None:
    """Count nodes with aliases expanded, without expanding them (iterative, memoised)."""
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    distinct = 0
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in _children(node))
            if expanded[key] - distinct > max_alias_nodes:
                raise _limit_error(node, source, f"aliases expand the document beyond the "
                                   f"limit of {max_alias_nodes:,} extra nodes (a \"billion "
                                   "laughs\" document?)")
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise _limit_error(node, source, "an alias refers to a node that contains it "
                               "(recursive YAML is not accepted)")
        if depth > max_depth:
            raise _limit_error(node, source, f"nested deeper than {max_depth} levels")
        distinct += 1
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) not in expanded:
                stack.append((child, depth + 1, False))


def _limit_error(node: yaml.Node, source: str, problem: str) -> YamlError:
    line = node.start_mark.line + 1 if node.start_mark is not None else None
    return YamlError(problem, source=source, line=line)
