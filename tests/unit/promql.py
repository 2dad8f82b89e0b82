"""The metric names a PromQL expression reads, without a PromQL library.

A small tokenizer and one pass over its tokens: string literals, numbers and durations,
Grafana variables (`$x`, `${x}`, `$__rate_interval`) are dropped; everything between `{`
and `}` is a label-matcher block (its `__name__="x"` matcher names a metric) and between
`[` and `]` a range or subquery; an identifier followed by `(`, or by `by` / `without`, is
a function or an aggregation; the label lists of `by`, `without`, `on`, `ignoring`,
`group_left` and `group_right` are skipped; keywords and operators are dropped. What
remains are metric names.
"""

from __future__ import annotations

import re

KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATION_MODIFIERS = {"by", "without"}

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,@])
  | (?P<open>[({\[])
  | (?P<close>[)}\]])
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.VERBOSE,
)
_PAIRS = {"(": ")", "{": "}", "[": "]"}


class PromQLError(ValueError):
    pass


def tokens(expr: str) -> list[tuple[str, str]]:
    found = [(m.lastgroup or "", m.group()) for m in _TOKEN.finditer(expr)]
    bad = [text for kind, text in found if kind == "other"]
    if bad:
        raise PromQLError(f"unexpected {bad[0]!r} in {expr!r}")
    return [(kind, text) for kind, text in found if kind != "space"]


def _closing(toks: list[tuple[str, str]], open_at: int, expr: str) -> int:
    """Index of the bracket closing the one at `open_at`."""
    stack: list[str] = []
    for j in range(open_at, len(toks)):
        kind, text = toks[j]
        if kind == "open":
            stack.append(_PAIRS[text])
        elif kind == "close":
            if not stack or stack.pop() != text:
                raise PromQLError(f"unbalanced {text!r} in {expr!r}")
            if not stack:
                return j
    raise PromQLError(f"unclosed {toks[open_at][1]!r} in {expr!r}")


def _name_matchers(block: list[tuple[str, str]], expr: str) -> set[str]:
    names = set()
    for k in range(len(block) - 2):
        if block[k] == ("ident", "__name__"):
            op, value = block[k + 1], block[k + 2]
            if op[1] != "=" or value[0] != "string":
                raise PromQLError(f'only __name__="..." can be checked, in {expr!r}')
            names.add(value[1][1:-1])
    return names


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects."""
    toks = tokens(expr)
    names: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "open" and text == "{":
            close = _closing(toks, i, expr)
            names |= _name_matchers(toks[i + 1 : close], expr)
            i = close
        elif kind == "open" and text == "[":
            i = _closing(toks, i, expr)
        elif kind == "ident":
            word = text.lower()
            if word in LABEL_LIST_KEYWORDS:
                if following == "(":
                    i = _closing(toks, i + 1, expr)
            elif word in KEYWORDS or following == "(" or following in AGGREGATION_MODIFIERS:
                pass  # a keyword, a function or an aggregation
            else:
                names.add(text)
        i += 1
    return names
