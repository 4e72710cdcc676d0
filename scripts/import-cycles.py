#!/usr/bin/env python3
"""The import graph of the crate's top-level modules, from its `crate::x`
paths, and the cycles in it. ARCHITECTURE.md states that dependencies point
one way; this checks it (CI runs it).

Usage: python3 scripts/import-cycles.py [SRC] [--graph]
A module is SRC/NAME.rs together with SRC/NAME/ (main.rs and lib.rs, which
sit above everything, are left out); test modules (`#[cfg(test)]` to the
end of a file) and comments are not imports. Prints each cycle, with
--graph every module's imports too; exits 1 if there is a cycle.
"""

import os
import re
import sys

USE_BLOCK = re.compile(r"\buse\s+crate::\{([^;]*)\};", re.S)
CRATE_PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
NAME = re.compile(r"\s*([a-z_][a-z0-9_]*)")


def modules(src):
    """Each top-level module and its files."""
    found = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry.endswith(".rs") and entry not in ("main.rs", "lib.rs"):
            found.setdefault(entry[:-3], []).append(path)
        elif os.path.isdir(path):
            found.setdefault(entry, []).extend(
                os.path.join(directory, name)
                for directory, _, names in os.walk(path) for name in names if name.endswith(".rs"))
    return found


def top_level_names(block):
    """The first name of each comma-separated item of a `use crate::{…}` block."""
    depth, current, items = 0, "", []
    for character in block:
        if character == "{":
            depth += 1
        elif character == "}":
            depth -= 1
        if depth == 0 and character == ",":
            items.append(current)
            current = ""
        else:
            current += character
    items.append(current)
    return {match.group(1) for match in map(NAME.match, items) if match}


def imports(path):
    """The top-level modules a file names through `crate::`."""
    with open(path, encoding="utf-8") as file:
        text = file.read()
    tests = text.find("#[cfg(test)]")
    if tests >= 0:
        text = text[:tests]
    text = re.sub(r"//[^\n]*", "", text)
    names = set(CRATE_PATH.findall(text))
    for block in USE_BLOCK.findall(text):
        names |= top_level_names(block)
    return names


def graph(src):
    found = modules(src)
    return {module: {name for path in files for name in imports(path) if name in found and name != module}
            for module, files in found.items()}


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(edges[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            components.append(sorted(component))

    sys.setrecursionlimit(10000)
    for module in sorted(edges):
        if module not in index:
            visit(module)
    return [component for component in components if len(component) > 1]


def main(argv):
    arguments = [argument for argument in argv if not argument.startswith("--")]
    src = arguments[0] if arguments else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    edges = graph(src)
    if "--graph" in argv:
        for module in sorted(edges):
            print(f"{module} -> {', '.join(sorted(edges[module])) or '(nothing)'}")
    found = cycles(edges)
    for component in found:
        inside = [f"{a}->{b}" for a in component for b in sorted(edges[a]) if b in component]
        print("cycle:", " ".join(component), "|", ", ".join(inside))
    print(f"import cycles among {len(edges)} top-level modules: {len(found)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
