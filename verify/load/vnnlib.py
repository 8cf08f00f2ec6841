"""VNN-LIB properties (the VNN-COMP subset) -> :class:`~verify.spec.Property`.

Supported: ``(declare-const X_i Real)`` / ``Y_i``; per-input bounds ``(assert (<= X_i c))``,
``(>= X_i c)`` (either argument order, also inside a top-level ``and``); and output constraints built
from ``or`` / ``and`` over comparisons ``<=, >=, <, >, =`` of linear terms in ``Y`` (``Y_i``,
numbers, ``(+ ...)``, ``(- ...)``, ``(* c Y_i)``). All top-level assertions are conjoined.

The file states the COUNTERexample condition. It is put in disjunctive normal form: each disjunct
becomes a group of margin rows ``m(y) = C y + d``, one per comparison, with the comparison true iff
``m <= 0`` (e.g. ``(>= Y_0 Y_8)`` gives ``m = Y_8 - Y_0``); see :mod:`verify.spec`. Strict ``<``/``>``
are read as ``<=``/``>=`` (a conservative closure: certifying the closed set certifies the open one).
Numbers are parsed with ``float`` of the literal (exactly rounded). Disjunctions over inputs are not
supported (a :class:`~verify.spec.SpecError` says so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Union

import numpy as np

from verify.spec import InputBox, OutputSpec, Property, SpecError

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VAR = re.compile(r"^([XY])_(\d+)$")
MAX_DISJUNCTS = 100_000


@dataclass(frozen=True)
class _Sym:
    text: str
    line: int


Sexp = Union[_Sym, list]


@dataclass
class _Lin:
    """A linear term: ``{(kind, index): coef}`` plus a constant."""

    coef: dict
    const: float


def parse_vnnlib(path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None) -> Property:
    """Parse a VNN-LIB file into a :class:`Property` (input box + grouped output margins).

    ``n_inputs`` / ``n_outputs`` (the network's sizes) are checked against the declarations.
    Raises :class:`SpecError` with the file and line for anything unsupported or malformed.
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"property file {p} does not exist")
    forms = _parse(p.read_text(), p)
    declared: dict[str, set[int]] = {"X": set(), "Y": set()}
    lower: dict[int, float] = {}
    upper: dict[int, float] = {}
    out_formulas: list[Sexp] = []
    for form in forms:
        head = _head(form, p)
        if head == "declare-const":
            _declare(form, declared, p)
        elif head == "assert":
            if len(form) != 2:
                raise SpecError(f"{p}:{_line(form)}: assert takes exactly one formula")
            _assert(form[1], lower, upper, out_formulas, p)
        elif head in ("set-logic", "set-info", "check-sat", "get-model", "exit", "set-option"):
            continue
        else:
            raise SpecError(f"{p}:{_line(form)}: unsupported command '{head}'")
    n_in = _count(declared["X"], n_inputs, "input", "X", p)
    n_out = _count(declared["Y"], n_outputs, "output", "Y", p)
    box = _box(lower, upper, n_in, p)
    spec = _output_spec(out_formulas, n_out, p)
    return Property(box, spec)


# --- s-expressions ------------------------------------------------------------------------------
def _parse(text: str, p: Path) -> list[Sexp]:
    stack: list[_Form] = [_Form()]
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0]
        for tok in _TOKEN.findall(line):
            if tok == "(":
                stack.append(_form(lineno))
            elif tok == ")":
                if len(stack) == 1:
                    raise SpecError(f"{p}:{lineno}: unbalanced ')'")
                done = stack.pop()
                stack[-1].append(done)
            else:
                stack[-1].append(_Sym(tok, lineno))
    if len(stack) != 1:
        raise SpecError(f"{p}:{stack[-1].line}: '(' is never closed")
    for form in stack[0]:
        if isinstance(form, _Sym):
            raise SpecError(f"{p}:{form.line}: unexpected '{form.text}' outside parentheses")
    return list(stack[0])


class _Form(list):
    """A parenthesized list that remembers the line where it opened."""

    line: int = 0


def _form(line: int) -> _Form:
    f = _Form()
    f.line = line
    return f


def _line(form: Sexp) -> int:
    return form.line if isinstance(form, (_Sym, _Form)) else 0


def _head(form: Sexp, p: Path) -> str:
    if not isinstance(form, list) or not form or not isinstance(form[0], _Sym):
        raise SpecError(f"{p}:{_line(form)}: expected a command like (assert ...)")
    return form[0].text


def _declare(form: Sexp, declared: dict[str, set[int]], p: Path) -> None:
    if len(form) != 3 or not isinstance(form[1], _Sym):
        raise SpecError(f"{p}:{_line(form)}: malformed declare-const")
    m = _VAR.match(form[1].text)
    if not m:
        raise SpecError(f"{p}:{_line(form)}: variable {form[1].text} is not X_i or Y_i")
    declared[m.group(1)].add(int(m.group(2)))


def _count(indices: set[int], expected: int | None, what: str, letter: str, p: Path) -> int:
    n = max(indices) + 1 if indices else 0
    if indices != set(range(n)):
        missing = min(set(range(n)) - indices)
        raise SpecError(f"{p}: {letter}_{missing} is not declared although {letter}_{n - 1} is")
    if n == 0:
        raise SpecError(f"{p}: no {what} variables ({letter}_0, ...) are declared")
    if expected is not None and n != expected:
        raise SpecError(f"{p}: the property declares {n} {what}s but the network has {expected}")
    return n


# --- assertions ---------------------------------------------------------------------------------
def _vars_in(form: Sexp) -> set[str]:
    if isinstance(form, _Sym):
        m = _VAR.match(form.text)
        return {m.group(1)} if m else set()
    out: set[str] = set()
    for x in form:
        out |= _vars_in(x)
    return out


def _assert(f: Sexp, lower: dict, upper: dict, out_formulas: list, p: Path) -> None:
    kinds = _vars_in(f)
    if kinds == {"Y"}:
        out_formulas.append(f)
        return
    if "Y" in kinds:
        raise SpecError(f"{p}:{_line(f)}: constraints mixing inputs X and outputs Y are not supported")
    op = _head(f, p)
    if op == "and":
        for g in f[1:]:
            _assert(g, lower, upper, out_formulas, p)
        return
    if op == "or":
        raise SpecError(f"{p}:{_line(f)}: disjunctions over input boxes are not supported (split the property into one file per box)")
    _input_bound(f, lower, upper, p)


def _input_bound(f: Sexp, lower: dict, upper: dict, p: Path) -> None:
    op = _head(f, p)
    if op not in ("<=", ">=", "<", ">", "=") or len(f) != 3:
        raise SpecError(f"{p}:{_line(f)}: unsupported input constraint '{op}' (expected (<= X_i c) or (>= X_i c))")
    diff = _sub(_lin(f[1], p), _lin(f[2], p))  # lhs - rhs
    xs = [k for k, v in diff.coef.items() if v != 0.0]
    if len(xs) != 1:
        raise SpecError(f"{p}:{_line(f)}: only bounds on a single input X_i are supported")
    (_, i), a = xs[0], diff.coef[xs[0]]
    value = -diff.const / a + 0.0  # a * x + const (op) 0; "+ 0.0" turns -0.0 into 0.0
    le = op in ("<=", "<") if a > 0 else op in (">=", ">")
    if op == "=":
        _tighten(upper, i, value, min)
        _tighten(lower, i, value, max)
    elif le:
        _tighten(upper, i, value, min)
    else:
        _tighten(lower, i, value, max)


def _tighten(bounds: dict, i: int, value: float, pick) -> None:
    bounds[i] = value if i not in bounds else pick(bounds[i], value)


def _box(lower: dict, upper: dict, n: int, p: Path) -> InputBox:
    for i in range(n):
        if i not in lower or i not in upper:
            side = "lower" if i not in lower else "upper"
            raise SpecError(f"{p}: input X_{i} has no {side} bound (every input needs (>= X_i a) and (<= X_i b))")
    extra = sorted((set(lower) | set(upper)) - set(range(n)))
    if extra:
        raise SpecError(f"{p}: X_{extra[-1]} is bounded but not declared")
    lo = np.array([lower[i] for i in range(n)], dtype=np.float64)
    hi = np.array([upper[i] for i in range(n)], dtype=np.float64)
    if np.any(lo > hi):
        i = int(np.argmax(lo > hi))
        raise SpecError(f"{p}: the input box is empty at X_{i} (lower {lo[i]} > upper {hi[i]})")
    return InputBox(lo, hi)


# --- linear terms -------------------------------------------------------------------------------
def _lin(t: Sexp, p: Path) -> _Lin:
    if isinstance(t, _Sym):
        m = _VAR.match(t.text)
        if m:
            return _Lin({(m.group(1), int(m.group(2))): 1.0}, 0.0)
        try:
            return _Lin({}, float(t.text))
        except ValueError:
            raise SpecError(f"{p}:{t.line}: '{t.text}' is neither a number nor a variable X_i / Y_i") from None
    op = _head(t, p)
    args = [_lin(a, p) for a in t[1:]]
    if op == "+" and args:
        out = args[0]
        for a in args[1:]:
            out = _add(out, a)
        return out
    if op == "-" and len(args) == 1:
        return _scale(args[0], -1.0)
    if op == "-" and args:
        out = args[0]
        for a in args[1:]:
            out = _sub(out, a)
        return out
    if op == "*" and len(args) == 2:
        a, b = args
        if not a.coef:
            return _scale(b, a.const)
        if not b.coef:
            return _scale(a, b.const)
        raise SpecError(f"{p}:{_line(t)}: products of variables are not linear")
    raise SpecError(f"{p}:{_line(t)}: unsupported term '{op}' (expected +, -, * or a comparison)")


def _add(a: _Lin, b: _Lin) -> _Lin:
    coef = dict(a.coef)
    for k, v in b.coef.items():
        coef[k] = coef.get(k, 0.0) + v
    return _Lin(coef, a.const + b.const)


def _scale(a: _Lin, c: float) -> _Lin:
    return _Lin({k: v * c for k, v in a.coef.items()}, a.const * c)


def _sub(a: _Lin, b: _Lin) -> _Lin:
    return _add(a, _scale(b, -1.0))


# --- output formulas ----------------------------------------------------------------------------
def _dnf(f: Sexp, p: Path) -> list[list[_Lin]]:
    """Disjuncts, each a list of terms ``t`` meaning ``t <= 0``."""
    op = _head(f, p)
    if op == "or":
        return [d for g in f[1:] for d in _dnf(g, p)]
    if op == "and":
        parts = [_dnf(g, p) for g in f[1:]]
        size = int(np.prod([len(x) for x in parts]))
        if size > MAX_DISJUNCTS:
            raise SpecError(f"{p}:{_line(f)}: the output condition expands to {size} disjuncts (limit {MAX_DISJUNCTS})")
        return [[t for d in combo for t in d] for combo in product(*parts)]
    if op in ("<=", "<", ">=", ">", "=") and len(f) == 3:
        a, b = _lin(f[1], p), _lin(f[2], p)
        if op in ("<=", "<"):
            return [[_sub(a, b)]]
        if op in (">=", ">"):
            return [[_sub(b, a)]]
        return [[_sub(a, b), _sub(b, a)]]
    raise SpecError(f"{p}:{_line(f)}: unsupported output constraint '{op}'")


def _output_spec(formulas: list[Sexp], n_out: int, p: Path) -> OutputSpec:
    if not formulas:
        raise SpecError(f"{p}: no output constraint (assert over Y_i) found")
    disjuncts: list[list[_Lin]] = [[]]
    for f in formulas:  # top-level assertions are conjoined
        disjuncts = [d + e for d in disjuncts for e in _dnf(f, p)]
        if len(disjuncts) > MAX_DISJUNCTS:
            raise SpecError(f"{p}: the output condition expands to more than {MAX_DISJUNCTS} disjuncts")
    rows, groups = [], []
    for d in disjuncts:
        groups.append(tuple(range(len(rows), len(rows) + len(d))))
        rows += d
    C = np.zeros((len(rows), n_out))
    dvec = np.zeros(len(rows))
    for r, t in enumerate(rows):
        for (kind, i), v in t.coef.items():
            if i >= n_out:
                raise SpecError(f"{p}: Y_{i} is used but the network has {n_out} outputs")
            C[r, i] += v
        dvec[r] = t.const
    return OutputSpec(C, dvec, tuple(groups), _robustness_label(C, dvec, groups))


def _robustness_label(C: np.ndarray, d: np.ndarray, groups: list) -> int | None:
    """The label when the spec is exactly 'label beats every other class', else None."""
    n = C.shape[1]
    if len(groups) != n - 1 or any(len(g) != 1 for g in groups) or np.any(d != 0):
        return None
    labels = {int(np.argmax(row)) for row in C if sorted(row.tolist()) == [-1.0] + [0.0] * (n - 2) + [1.0]}
    if len(labels) != 1:
        return None
    label = labels.pop()
    others = {int(np.argmin(row)) for row in C}
    return label if others == set(range(n)) - {label} and all(row[label] == 1.0 for row in C) else None
