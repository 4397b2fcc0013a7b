"""A row filter language for job fields (``data.normal_when``) that can only name columns.

A job file is data, and on a shared cluster it may come from someone else, so a filter is never
handed to ``eval`` (pandas' ``DataFrame.eval`` reaches the module's globals with ``@name`` and
allows attribute calls). It is parsed with Python's ``ast`` and every node is checked against an
allow-list; what may appear:

- column names (``label``), or any column name in backticks (`` `Grad.Rate` ``);
- literals: numbers, strings, True/False/None, and lists or tuples of them (for ``in``);
- comparisons ``== != < <= > >=`` (chained too), ``in`` and ``not in``;
- ``&`` / ``and``, ``|`` / ``or``, ``~`` / ``not``, and parentheses;
- ``isnull(column)`` and ``notnull(column)``.

Anything else (attribute access, subscripts, other calls, ``@``, lambdas, comprehensions,
arithmetic) is refused with one line naming what was found."""

from __future__ import annotations

import ast
import operator
import re
from typing import Any

import numpy as np
import pandas as pd

GRAMMAR = ("column names (in `backticks` when not plain words), literals, comparisons, in / not in, "
           "& | ~ (and / or / not), isnull(column), notnull(column)")
_BACKTICK = re.compile(r"`([^`]*)`")
_PREFIX = "__col_"
_FUNCS = ("isnull", "notnull")
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_REFUSED = {ast.Attribute: "attribute access", ast.Subscript: "subscripts", ast.Call: "function calls",
            ast.Lambda: "lambdas", ast.BinOp: "arithmetic", ast.NamedExpr: "assignments",
            ast.ListComp: "comprehensions", ast.GeneratorExp: "comprehensions", ast.DictComp: "comprehensions",
            ast.SetComp: "comprehensions", ast.Starred: "starred expressions", ast.IfExp: "if-expressions",
            ast.Dict: "dicts", ast.JoinedStr: "f-strings", ast.Await: "await", ast.Yield: "yield"}


class RowFilter:
    """A parsed, checked filter: ``mask(df)`` gives the rows it keeps; ``columns`` are those it names."""

    def __init__(self, field: str, text: str):
        self.field, self.text = field, text
        self._names: dict[str, str] = {}

        def quote(m: re.Match) -> str:
            key = f"{_PREFIX}{len(self._names)}"
            self._names[key] = m.group(1)
            return key

        source = _BACKTICK.sub(quote, text)
        if "`" in source:
            self._refuse("an unclosed backtick")
        if "@" in source:
            self._refuse("'@' (references to Python variables)")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as err:
            self._refuse(f"a syntax error ({err.msg})")
        self.tree = tree.body
        self.columns: list[str] = []
        self._check(self.tree)

    def _refuse(self, what: str):
        raise ValueError(f"{self.field} '{self.text}' has {what}; a filter may use only {GRAMMAR}")

    def _column(self, name: str) -> str:
        return self._names.get(name, name)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            self._check(node.left), self._check(node.right)
        elif isinstance(node, ast.UnaryOp):
            if isinstance(node.op, (ast.Invert, ast.Not)):
                self._check(node.operand)
            elif isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
                    and isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
                return
            else:
                self._refuse("arithmetic")
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARE and not isinstance(op, (ast.In, ast.NotIn)):
                    self._refuse(f"the comparison '{type(op).__name__}'")
            for part in [node.left, *node.comparators]:
                self._check(part)
        elif isinstance(node, ast.Name):
            if node.id.startswith("__") and node.id not in self._names:
                self._refuse(f"the name '{node.id}'")
            if node.id in _FUNCS:
                self._refuse(f"'{node.id}' without a column: write {node.id}(column)")
            self.columns.append(self._column(node.id))
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool, type(None))):
                self._refuse(f"the literal {node.value!r}")
        elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            for e in node.elts:
                if not isinstance(e, ast.Constant) and not (isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub)):
                    self._refuse("a list that holds more than literals")
                self._check(e)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
            if node.keywords or len(node.args) != 1 or not isinstance(node.args[0], ast.Name):
                self._refuse(f"{node.func.id}(...) with other than one column")
            self._check(node.args[0])
        else:
            what = _REFUSED.get(type(node), f"'{type(node).__name__}'")
            if isinstance(node, ast.Attribute):
                what += f" (.{node.attr})"
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                what += f" ({node.func.id}(...))"
            self._refuse(what)

    def mask(self, df: pd.DataFrame) -> np.ndarray:
        """The rows of ``df`` the filter keeps (a row where it is unknown, through nulls, is not kept)."""
        missing = [c for c in dict.fromkeys(self.columns) if c not in df.columns]
        if missing:
            raise ValueError(f"{self.field} '{self.text}' names column(s) the data does not have: "
                             f"{', '.join(missing)}")
        out = self._eval(self.tree, df)
        if not isinstance(out, pd.Series):
            raise ValueError(f"{self.field} '{self.text}' does not depend on any row: compare a column")
        if not pd.api.types.is_bool_dtype(out):
            raise ValueError(f"{self.field} '{self.text}' must give true/false for every row (it gives "
                             f"{out.dtype} values): compare a column")
        return out.fillna(False).to_numpy(dtype=bool)

    def _eval(self, node: ast.AST, df: pd.DataFrame) -> Any:
        if isinstance(node, ast.Name):
            return df[self._column(node.id)]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return [self._eval(e, df) for e in node.elts]
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, df)
            if isinstance(node.op, ast.USub):
                return -v
            return ~_boolean(v, self) if isinstance(v, pd.Series) else (not v)
        if isinstance(node, ast.Call):
            col = df[self._column(node.args[0].id)]
            return col.isna() if node.func.id == "isnull" else col.notna()
        if isinstance(node, (ast.BoolOp, ast.BinOp)):
            parts = [self._eval(v, df) for v in (node.values if isinstance(node, ast.BoolOp)
                                                   else (node.left, node.right))]
            both = isinstance(node.op, (ast.And, ast.BitAnd))
            out = _boolean(parts[0], self)
            for p in parts[1:]:
                out = (out & _boolean(p, self)) if both else (out | _boolean(p, self))
            return out
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, df)
            result = None
            for op, right_node in zip(node.ops, node.comparators):
                right = self._eval(right_node, df)
                part = _compare(op, left, right)
                result = part if result is None else (_boolean(result, self) & _boolean(part, self))
                left = right
            return result
        raise AssertionError(type(node).__name__)  # _check refused it


def _boolean(v: Any, flt: RowFilter) -> Any:
    if isinstance(v, pd.Series):
        if pd.api.types.is_bool_dtype(v):
            return v.fillna(False).astype(bool)
        if v.isin([0, 1]).all():
            return v.astype(bool)
        raise ValueError(f"{flt.field} '{flt.text}' combines a non-true/false column with & | ~: compare it first")
    return bool(v)


def _compare(op: ast.cmpop, left: Any, right: Any) -> Any:
    """``left op right`` for a column or a literal on either side; a null is never equal, unequal,
    in or out of anything (a row with a null in a compared column is not kept)."""
    if isinstance(op, (ast.In, ast.NotIn)):
        if not isinstance(left, pd.Series):
            raise ValueError("'in' needs a column on its left")
        inside = left.isin(right if isinstance(right, list) else [right])
        return inside if isinstance(op, ast.In) else ~inside & left.notna()
    try:
        out = _COMPARE[type(op)](left, right)
    except TypeError as err:
        raise ValueError(f"cannot compare {_what(left)} with {_what(right)}: {err}") from None
    known = [v.notna() for v in (left, right) if isinstance(v, pd.Series)]
    for k in known:
        out = out & k
    return out


def _what(v: Any) -> str:
    return f"column '{v.name}'" if isinstance(v, pd.Series) else repr(v)
