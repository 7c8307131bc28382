"""An offline PromQL sanity check for the scenario's ``metrics.prometheus`` queries.

The Prometheus server's own parser is authoritative (``perfgate validate`` asks it when it
answers); this catches what can be seen without one. Standard library only.
"""

from __future__ import annotations

import re

__all__ = ["promql_problem"]


def promql_problem(query: str) -> str:
    """An offline PromQL sanity check (brackets, quotes, templates); "" when nothing is wrong.

    The server's own parser is authoritative: ``perfgate validate`` asks it when it answers.
    """
    templates = re.findall(r"{{\s*(.*?)\s*}}", query)
    unknown = [t for t in templates if t != "namespace"]
    if unknown:
        return f"unknown template {{{{ {unknown[0]} }}}} (only {{{{ namespace }}}} is known)"
    text = re.sub(r"{{\s*namespace\s*}}", "ns", query)
    pairs, stack, quote = {")": "(", "]": "[", "}": "{"}, [], ""
    for i, c in enumerate(text):
        if quote:
            if c == quote and text[i - 1] != "\\":
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            stack.append(c)
        elif c in pairs and (not stack or stack.pop() != pairs[c]):
            return f"unbalanced {c!r} at character {i + 1}"
    if quote:
        return f"unterminated string ({quote})"
    if stack:
        return f"unclosed {stack[-1]!r}"
    return ""
