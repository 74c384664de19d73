"""``${...}`` as digdag evaluates it: JavaScript expressions over the workflow's variables.

digdag (``digdag-core/.../agent/digdag.js``) splits a value into text and ``${...}`` scripts
(the script ends at the ``}`` that balances the braces after ``${``; ``$$`` is a literal ``$``;
``${name:...}`` such as ``${secret:x}`` is left for the operator), evaluates each script as an
ES5 expression with the variables in scope and ``moment`` bundled, and writes the result: a
string as is, ``null``/``undefined`` as nothing, anything else as ``JSON.stringify`` does.

Scripts are parsed by esprima (the ECMAScript parser's Python port) and evaluated here over
that syntax tree: literals, variables and dotted/indexed access into ``_export`` objects,
``+ - * / %`` with JavaScript's coercions (``'a' + 1`` is ``'a1'``), comparisons, ``== ===``,
``&& || !``, ``?:``, array/object literals, ``moment(...)`` (:mod:`.moment`), ``Math``,
``JSON``, ``parseInt``/``parseFloat``/``String``/``Number`` and the ES5 string and array
methods. Anything else is an :class:`ExpressionError` naming the construct.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from line_exports.workflows.moment import Moment, MomentError

START = re.compile(r"\$\{(?![a-z]+:)")


class ExpressionError(ValueError):
    """A ``${...}`` that cannot be parsed or evaluated; the message names the part."""


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED = _Undefined()


@dataclass(frozen=True)
class Script:
    """One ``${...}``: its source and parsed expression."""

    source: str
    tree: Any

    def names(self) -> set[str]:
        """Free variable names the script reads (outermost identifiers)."""
        found: set[str] = set()
        _collect(self.tree, found)
        return found


@dataclass(frozen=True)
class Template:
    """A value split as digdag.js splits it: literal text and scripts, in order."""

    parts: tuple[str | Script, ...]
    raw: tuple[str | Script, ...] = ()
    """The same parts with literal text as written (``$$`` not yet collapsed)."""

    @property
    def scripts(self) -> list[Script]:
        return [p for p in self.parts if isinstance(p, Script)]

    def names(self) -> set[str]:
        return set().union(*(s.names() for s in self.scripts)) if self.scripts else set()

    def partial(self, variables: Mapping[str, Any], zone: tzinfo, later: set[str]) -> str:
        """The text with every script that reads none of ``later`` filled now, the others
        kept as ``${...}`` for :meth:`render` at run time."""
        out = []
        for part in self.raw:
            if isinstance(part, str):
                out.append(part)
            elif part.names() & later or "last_results" in part.source:
                out.append(f"${{{part.source}}}")
            else:
                out.append(Template((part,)).render(variables, zone).replace("$", "$$"))
        return "".join(out)

    def render(self, variables: Mapping[str, Any], zone: tzinfo) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            try:
                value = Evaluator(variables, zone).eval(part.tree)
            except (MomentError, ExpressionError) as exc:
                raise ExpressionError(f"${{{part.source}}}: {exc}") from None
            except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
                raise ExpressionError(f"${{{part.source}}}: {exc}") from None
            out.append(output(value))
        return "".join(out)


def parse_template(text: str) -> Template:
    """Split ``text`` into literal text and parsed scripts (digdag.js's extended syntax)."""
    raw: list[str | Script] = []
    position = 0
    while position < len(text):
        match = START.search(text, position)
        if match is None:
            raw.append(text[position:])
            break
        if match.start() > position:
            raw.append(text[position : match.start()])
        depth, end = 0, None
        for index in range(match.end(), len(text)):
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                depth -= 1
                if depth == -1:
                    end = index
                    break
        if end is None:  # unbalanced: digdag keeps the rest as text
            raw.append(text[match.start() :])
            break
        source = text[match.end() : end]
        if source.strip():
            raw.append(Script(source, parse_expression(source)))
        position = end + 1
    kept = tuple(p for p in raw if p != "")
    parts = tuple(p.replace("$$", "$") if isinstance(p, str) else p for p in kept)
    return Template(parts, kept)


def parse_expression(source: str) -> Any:
    """The esprima tree of one script (an expression, as digdag wraps it in parentheses).

    esprima is imported here, on the first script: its import builds Unicode tables (about
    0.4 s of CPU), which a process that parses no ``${...}`` does not pay."""
    import esprima

    try:
        program = esprima.parseScript(f"({source}\n)")
    except esprima.Error as exc:
        raise ExpressionError(f"${{{source}}}: not a JavaScript expression ({exc})") from None
    if len(program.body) != 1 or program.body[0].type != "ExpressionStatement":
        raise ExpressionError(f"${{{source}}}: not a single JavaScript expression")
    return program.body[0].expression


def _collect(node: Any, found: set[str]) -> None:
    kind = getattr(node, "type", None)
    if kind == "Identifier":
        found.add(node.name)
    elif kind == "MemberExpression":
        _collect(node.object, found)
        if node.computed:
            _collect(node.property, found)
    elif kind == "Property":
        _collect(node.value, found)
    elif kind is not None:
        for key, value in vars(node).items():
            if key in ("type", "loc", "range"):
                continue
            for child in value if isinstance(value, list) else [value]:
                if hasattr(child, "type"):
                    _collect(child, found)


# -- JavaScript values ---------------------------------------------------------------------


def number_text(value: float | int) -> str:
    """ECMAScript Number::toString."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, _, exponent = text.partition("e")
        sign = "-" if exponent.startswith("-") else "+"
        text = f"{mantissa.removesuffix('.0')}e{sign}{int(exponent.lstrip('+-'))}"
    return text


def to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, (bool, int, float)):
        return number_text(value)
    if isinstance(value, Moment):
        return value.toString()
    if isinstance(value, list):
        return ",".join("" if v is None or v is UNDEFINED else to_string(v) for v in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    if callable(value):
        return "function () { [native code] }"
    return str(value)


def to_number(value: Any) -> float | int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if value is None:
        return 0
    if value is UNDEFINED:
        return math.nan
    if isinstance(value, Moment):
        return value.ms
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0
        try:
            return (
                int(text, 0) if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", text) else float(text)
            )
        except ValueError:
            return math.nan
    if isinstance(value, list):
        return to_number(to_string(value))
    return math.nan


def truthy(value: Any) -> bool:
    if value is None or value is UNDEFINED:
        return False
    if isinstance(value, (bool, int, float)):
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def _primitive(value: Any) -> Any:
    if isinstance(value, Moment):
        return value.ms  # valueOf
    if isinstance(value, (list, Mapping)):
        return to_string(value)
    return value


def _num(value: float | int) -> float | int:
    """Keep integral results as int (digits stay exact), others as float."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def type_of(value: Any) -> str:
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if callable(value) and not isinstance(value, Moment):
        return "function"
    return "object"


def strict_equal(a: Any, b: Any) -> bool:
    if type_of(a) != type_of(b):
        return False
    if a is None or b is None:
        return a is b
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return a == b
    if isinstance(a, (str, bool)):
        return a == b
    return a is b


def loose_equal(a: Any, b: Any) -> bool:
    if (a is None or a is UNDEFINED) and (b is None or b is UNDEFINED):
        return True
    if a is None or a is UNDEFINED or b is None or b is UNDEFINED:
        return False
    if type_of(a) == type_of(b):
        return strict_equal(a, b)
    if isinstance(a, (list, Mapping, Moment)):
        a = _primitive(a)
    if isinstance(b, (list, Mapping, Moment)):
        b = _primitive(b)
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return to_number(a) == to_number(b)


def output(value: Any) -> str:
    """What digdag writes for a script's value: strings as is, null as '', else JSON."""
    if value is None or value is UNDEFINED:
        return ""
    if isinstance(value, str):
        return value
    return json_stringify(value)


def json_stringify(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return (
            "null" if isinstance(value, float) and not math.isfinite(value) else number_text(value)
        )
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Moment):
        return json.dumps(value.toJSON())
    if isinstance(value, list):
        return (
            "["
            + ",".join(
                "null" if v is UNDEFINED or callable(v) else json_stringify(v) for v in value
            )
            + "]"
        )
    if isinstance(value, Mapping):
        items = [
            f"{json.dumps(str(k), ensure_ascii=False)}:{json_stringify(v)}"
            for k, v in value.items()
            if v is not UNDEFINED and not callable(v)
        ]
        return "{" + ",".join(items) + "}"
    return "null"


# -- the evaluator -------------------------------------------------------------------------

ES5_STRING_METHODS = {
    "toUpperCase": lambda s: s.upper(),
    "toLowerCase": lambda s: s.lower(),
    "trim": lambda s: s.strip(),
    "charAt": lambda s, i=0: s[int(to_number(i))] if 0 <= int(to_number(i)) < len(s) else "",
    "indexOf": lambda s, sub, start=0: s.find(to_string(sub), int(to_number(start))),
    "lastIndexOf": lambda s, sub: s.rfind(to_string(sub)),
    "concat": lambda s, *more: s + "".join(to_string(m) for m in more),
    "toString": lambda s: s,
}


def _slice_bounds(length: int, start: Any, end: Any) -> tuple[int, int]:
    def clamp(value: Any, default: int) -> int:
        if value is UNDEFINED:
            return default
        number = int(to_number(value))
        return max(length + number, 0) if number < 0 else min(number, length)

    return clamp(start, 0), clamp(end, length)


def _substring(s: str, start: Any = 0, end: Any = UNDEFINED) -> str:
    a = min(max(int(to_number(start)), 0), len(s))
    b = len(s) if end is UNDEFINED else min(max(int(to_number(end)), 0), len(s))
    return s[min(a, b) : max(a, b)]


def _substr(s: str, start: Any = 0, length: Any = UNDEFINED) -> str:
    a = int(to_number(start))
    a = max(len(s) + a, 0) if a < 0 else a
    n = len(s) - a if length is UNDEFINED else int(to_number(length))
    return s[a : a + max(n, 0)]


def _split(s: str, sep: Any = UNDEFINED, limit: Any = UNDEFINED) -> list[str]:
    if sep is UNDEFINED:
        parts = [s]
    elif to_string(sep) == "":
        parts = list(s)
    else:
        parts = s.split(to_string(sep))
    return parts if limit is UNDEFINED else parts[: int(to_number(limit))]


def _replace(s: str, pattern: Any, replacement: Any) -> str:
    if not isinstance(pattern, str):
        raise ExpressionError(
            "replace() takes a string pattern here (regular expressions are not supported)"
        )
    if callable(replacement):
        raise ExpressionError("replace() with a function is not supported")
    return s.replace(pattern, to_string(replacement).replace("$$", "$"), 1)


def _parse_int(text: Any, radix: Any = UNDEFINED) -> float | int:
    source = to_string(text).strip()
    base = 10 if radix is UNDEFINED else int(to_number(radix))
    if base == 16 or (radix is UNDEFINED and re.match(r"[+-]?0[xX]", source)):
        match = re.match(r"([+-]?)(?:0[xX])?([0-9a-fA-F]+)", source)
        return int(match.group(1) + match.group(2), 16) if match else math.nan
    match = re.match(r"[+-]?\d+", source) if base == 10 else None
    if base != 10:
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[:base]
        match = re.match(rf"[+-]?[{digits}]+", source, re.I)
        return int(match.group(0), base) if match else math.nan
    return int(match.group(0)) if match else math.nan


def _parse_float(text: Any) -> float | int:
    match = re.match(
        r"[+-]?(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Infinity)",
        to_string(text).strip(),
    )
    return _num(float(match.group(0))) if match else math.nan


def _json_parse(text: Any) -> Any:
    try:
        return json.loads(to_string(text))
    except json.JSONDecodeError as exc:
        raise ExpressionError(f"JSON.parse: {exc}") from None


MATH = {
    "floor": lambda x: _num(math.floor(to_number(x))),
    "ceil": lambda x: _num(math.ceil(to_number(x))),
    "round": lambda x: _num(math.floor(to_number(x) + 0.5)),
    "abs": lambda x: abs(to_number(x)),
    "max": lambda *xs: max((to_number(x) for x in xs), default=-math.inf),
    "min": lambda *xs: min((to_number(x) for x in xs), default=math.inf),
    "pow": lambda x, y: _num(float(to_number(x)) ** to_number(y)),
    "sqrt": lambda x: _num(math.sqrt(to_number(x))),
    "PI": math.pi,
}


class Evaluator:
    """Evaluates one esprima expression tree with ``variables`` in scope."""

    def __init__(self, variables: Mapping[str, Any], zone: tzinfo) -> None:
        self.variables = variables
        self.zone = zone
        moment = _MomentFactory(zone)
        self.globals: dict[str, Any] = {
            "moment": moment,
            "Math": MATH,
            "JSON": {"stringify": lambda v, *_: json_stringify(v), "parse": _json_parse},
            "parseInt": _parse_int,
            "parseFloat": _parse_float,
            "String": lambda v="": to_string(v),
            "Number": lambda v=0: _num(to_number(v)),
            "Boolean": lambda v=False: truthy(v),
            "isNaN": lambda v: math.isnan(float(to_number(v))),
            "undefined": UNDEFINED,
            "NaN": math.nan,
            "Infinity": math.inf,
        }

    def eval(self, node: Any) -> Any:
        handler = getattr(self, f"_{node.type}", None)
        if handler is None:
            raise ExpressionError(f"{node.type} is not supported in ${{...}}")
        return handler(node)

    def _Literal(self, node: Any) -> Any:  # noqa: N802
        if getattr(node, "regex", None):
            raise ExpressionError("regular expression literals are not supported")
        value = node.value
        return _num(value) if isinstance(value, float) else value

    def _Identifier(self, node: Any) -> Any:  # noqa: N802
        name = node.name
        if name in self.variables:
            return self.variables[name]
        if name in self.globals:
            return self.globals[name]
        raise ExpressionError(f"ReferenceError: {name} is not defined")

    def _ThisExpression(self, node: Any) -> Any:  # noqa: N802
        return dict(self.variables)

    def _ArrayExpression(self, node: Any) -> Any:  # noqa: N802
        return [UNDEFINED if e is None else self.eval(e) for e in node.elements]

    def _ObjectExpression(self, node: Any) -> Any:  # noqa: N802
        result = {}
        for prop in node.properties:
            if prop.kind != "init" or prop.computed:
                raise ExpressionError("only plain object literals {key: value} are supported")
            key = prop.key.name if prop.key.type == "Identifier" else to_string(prop.key.value)
            result[key] = self.eval(prop.value)
        return result

    def _SequenceExpression(self, node: Any) -> Any:  # noqa: N802
        value: Any = UNDEFINED
        for expression in node.expressions:
            value = self.eval(expression)
        return value

    def _ConditionalExpression(self, node: Any) -> Any:  # noqa: N802
        return self.eval(node.consequent if truthy(self.eval(node.test)) else node.alternate)

    def _LogicalExpression(self, node: Any) -> Any:  # noqa: N802
        left = self.eval(node.left)
        if node.operator == "&&":
            return self.eval(node.right) if truthy(left) else left
        return left if truthy(left) else self.eval(node.right)

    def _UnaryExpression(self, node: Any) -> Any:  # noqa: N802
        if node.operator == "typeof":
            try:
                return type_of(self.eval(node.argument))
            except ExpressionError:
                if node.argument.type == "Identifier":
                    return "undefined"
                raise
        value = self.eval(node.argument)
        if node.operator == "!":
            return not truthy(value)
        if node.operator == "-":
            return _num(-to_number(_primitive(value)))
        if node.operator == "+":
            return _num(to_number(_primitive(value)))
        if node.operator == "void":
            return UNDEFINED
        raise ExpressionError(f"the operator {node.operator} is not supported")

    def _BinaryExpression(self, node: Any) -> Any:  # noqa: N802
        op = node.operator
        left, right = self.eval(node.left), self.eval(node.right)
        if op == "+":
            a, b = _primitive(left), _primitive(right)
            if isinstance(a, str) or isinstance(b, str):
                return to_string(a) + to_string(b)
            return _num(to_number(a) + to_number(b))
        if op in ("-", "*", "/", "%"):
            a, b = to_number(_primitive(left)), to_number(_primitive(right))
            if op == "-":
                return _num(a - b)
            if op == "*":
                return _num(a * b)
            if op == "/":
                if b == 0:
                    if a == 0 or math.isnan(a):
                        return math.nan
                    return math.copysign(math.inf, a) * math.copysign(1, b)
                return _num(a / b)
            if b == 0:
                return math.nan
            return _num(math.fmod(a, b))
        if op in ("<", ">", "<=", ">="):
            a, b = _primitive(left), _primitive(right)
            if not (isinstance(a, str) and isinstance(b, str)):
                a, b = to_number(a), to_number(b)
            return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
        if op == "===":
            return strict_equal(left, right)
        if op == "!==":
            return not strict_equal(left, right)
        if op == "==":
            return loose_equal(left, right)
        if op == "!=":
            return not loose_equal(left, right)
        if op == "in":
            return isinstance(right, Mapping) and to_string(left) in right
        raise ExpressionError(f"the operator {op} is not supported")

    def _MemberExpression(self, node: Any) -> Any:  # noqa: N802
        target = self.eval(node.object)
        name = self.eval(node.property) if node.computed else node.property.name
        return self.member(target, name)

    def member(self, target: Any, name: Any) -> Any:
        if target is None or target is UNDEFINED:
            raise ExpressionError(
                f"TypeError: cannot read property {to_string(name)!r} of {to_string(target)}"
            )
        if isinstance(target, _MomentFactory):
            return target[to_string(name)]
        if isinstance(target, Mapping):
            key = to_string(name)
            return target.get(key, UNDEFINED)
        if isinstance(target, (list, str)):
            if name == "length":
                return len(target)
            if isinstance(name, (int, float)) and not isinstance(name, bool):
                index = int(name)
                return target[index] if 0 <= index < len(target) and index == name else UNDEFINED
            if isinstance(name, str) and name.isdigit():
                return self.member(target, int(name))
            return self._method(target, to_string(name))
        if isinstance(target, Moment):
            method = getattr(target, str(name), None)
            if method is None or str(name).startswith("_") or not callable(method):
                raise ExpressionError(f"moment has no method {name!r} here")
            if name == "local":
                return lambda: target.local(self.zone)
            return method
        if isinstance(target, (bool, int, float)):
            if name == "toFixed":
                return lambda digits=0: f"{to_number(target):.{int(to_number(digits))}f}"
            if name == "toString":
                return lambda radix=10: to_string(target) if radix == 10 else _radix(target, radix)
        raise ExpressionError(f"{type_of(target)} has no property {to_string(name)!r} here")

    def _method(self, target: list[Any] | str, name: str) -> Any:
        if isinstance(target, str):
            simple = ES5_STRING_METHODS.get(name)
            if simple is not None:
                return lambda *args: simple(target, *args)
            table = {
                "substring": _substring,
                "substr": _substr,
                "slice": lambda s, a=0, b=UNDEFINED: s[slice(*_slice_bounds(len(s), a, b))],
                "split": _split,
                "replace": _replace,
            }
        else:
            table = {
                "join": lambda items, sep=",": to_string(sep).join(
                    "" if v is None or v is UNDEFINED else to_string(v) for v in items
                ),
                "indexOf": lambda items, v: next(
                    (i for i, x in enumerate(items) if strict_equal(x, v)), -1
                ),
                "slice": lambda items, a=0, b=UNDEFINED: items[
                    slice(*_slice_bounds(len(items), a, b))
                ],
                "concat": lambda items, *more: (
                    items + [x for m in more for x in (m if isinstance(m, list) else [m])]
                ),
                "toString": lambda items: to_string(items),
            }
        function = table.get(name)
        if function is None:
            raise ExpressionError(f"{type_of(target)} method {name!r} is not supported")
        return lambda *args: function(target, *args)

    def _CallExpression(self, node: Any) -> Any:  # noqa: N802
        args = [self.eval(a) for a in node.arguments]
        if node.callee.type == "MemberExpression":
            function = self._MemberExpression(node.callee)
        else:
            function = self.eval(node.callee)
        if not callable(function):
            raise ExpressionError(f"TypeError: {_describe(node.callee)} is not a function")
        return function(*args)

    def _NewExpression(self, node: Any) -> Any:  # noqa: N802
        raise ExpressionError("new ... is not supported (use moment(...) for dates)")


def _radix(value: Any, radix: Any) -> str:
    number, base = int(to_number(value)), int(to_number(radix))
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    if number == 0:
        return "0"
    out, n = "", abs(number)
    while n:
        n, r = divmod(n, base)
        out = digits[r] + out
    return ("-" if number < 0 else "") + out


def _describe(node: Any) -> str:
    if node.type == "Identifier":
        return node.name
    if node.type == "MemberExpression" and not node.computed:
        return f"{_describe(node.object)}.{node.property.name}"
    return "the expression"


class _MomentFactory:
    """The global ``moment``: callable, with ``moment.utc(...)`` and ``moment.unix(s)``."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone

    def __call__(self, *args: Any) -> Moment:
        return Moment.create(self.zone, list(args))

    def __getitem__(self, name: str) -> Callable[..., Any]:
        if name == "utc":
            return lambda *args: Moment.create(self.zone, list(args), utc=True)
        if name == "unix":
            return lambda seconds: Moment(round(to_number(seconds) * 1000), self.zone)
        raise ExpressionError(f"moment.{name} is not supported")

    def get(self, name: str, default: Any = None) -> Any:
        return self[name]

    def __contains__(self, name: object) -> bool:
        return name in ("utc", "unix")


def render(text: str, variables: Mapping[str, Any], zone: tzinfo) -> str:
    """Fill every ``${...}`` of ``text`` (see the module docstring)."""
    return parse_template(text).render(variables, zone)
