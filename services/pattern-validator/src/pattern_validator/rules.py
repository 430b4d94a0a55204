"""User pattern rules: a small, safe expression language over features, evaluated on whole arrays.

    rsi_14 < 30 and close > sma_200
    crosses_above(sma_10, sma_30) or not (zscore_20 > 2)
    volume > 2 * sma_20 and abs(return_1) >= 0.02 and prev(close, 5) < close

Grammar (lowest precedence first; keywords are case-insensitive):

    condition  := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?     -- not chained
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | primary
    primary    := number | feature | function "(" arguments ")" | "(" condition ")"

Features are the names of the indicator catalogue (`rsi_14`, `bbands_20_2_upper`, `close`, ...).
Functions: `crosses_above(a, b)` and `crosses_below(a, b)` (a condition, true on the bar where `a`
moves from at-or-below `b` to above it, or the reverse), `prev(x, n)` (x as it was n bars ago, n a
whole number from 1 to 1000; x may be a number or a condition), `abs(x)`, `min(a, b)`, `max(a, b)`.

The text is tokenized and parsed by hand into a typed tree: nothing is ever handed to Python's
eval, exec or compile. Evaluation is vectorised over numpy arrays. A comparison involving NaN (an
indicator still warming up) is false, `!=` included; `not` then makes it true, as in plain logic.
Every refusal is `Invalid` with `errors=[{"field": "expression", "reason": ..., "position": ...}]`,
the reason naming the character position (0-based) and what to do about it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from aitrading.errors import Invalid
from aitrading.market.bars import FloatArray

BoolArray = npt.NDArray[np.bool_]
Values = FloatArray | BoolArray
Type = Literal["number", "condition"]

MAX_LENGTH = 500
MAX_DEPTH = 32
MAX_PREV = 1000
FUNCTIONS: dict[str, tuple[tuple[Type, ...], Type | None]] = {
    # name: (argument types, result type); None: the type of the first argument.
    "crosses_above": (("number", "number"), "condition"),
    "crosses_below": (("number", "number"), "condition"),
    "prev": (("number", "number"), None),  # first argument either type; checked in the parser
    "abs": (("number",), "number"),
    "min": (("number", "number"), "number"),
    "max": (("number", "number"), "number"),
}
COMPARISONS = ("<=", ">=", "==", "!=", "<", ">")
KEYWORDS = ("and", "or", "not")


# --- the tree -----------------------------------------------------------------------------------------
# Positions are where a node starts in the text; they are not part of a node's value, so a tree
# printed and parsed again equals the original.

@dataclass(frozen=True, slots=True)
class Number:
    value: float
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Arithmetic:
    op: str  # + - * /
    left: Node
    right: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Node
    right: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Logic:
    op: str  # and, or
    left: Node
    right: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Node, ...]
    pos: int = field(default=0, compare=False)


Node = Number | Feature | Negate | Arithmetic | Compare | Logic | Not | Call


def type_of(node: Node) -> Type:
    if isinstance(node, Number | Feature | Negate | Arithmetic):
        return "number"
    if isinstance(node, Compare | Logic | Not):
        return "condition"
    result = FUNCTIONS[node.function][1]
    return result if result is not None else type_of(node.args[0])


@dataclass(frozen=True)
class Expression:
    """A parsed, type-checked rule: its tree, the features it reads, the bars its functions look back."""

    text: str
    root: Node
    features: tuple[str, ...]
    lookback: int


# --- tokens -------------------------------------------------------------------------------------------

TokenKind = Literal["number", "name", "op", "end"]
_KINDS: dict[str, TokenKind] = {"number": "number", "name": "name", "op": "op"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    pos: int


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.]))
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op><=|>=|==|!=|[<>+\-*/(),])
""", re.VERBOSE | re.ASCII)


def _problem(reason: str, pos: int, field_name: str) -> Invalid:
    return Invalid(reason, errors=[{"field": field_name, "reason": reason, "position": pos}])


def tokenize(text: str, *, field_name: str = "expression") -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            char = text[pos]
            if char in "0123456789.":
                word = re.match(r"[A-Za-z0-9_.]+", text[pos:], re.ASCII)
                assert word is not None  # it starts with `char`
                raise _problem(f"malformed number {word.group()!r} at {pos}", pos, field_name)
            hint = " (write 'and', 'or', 'not')" if char in "&|!" else ""
            if char == "=":
                hint = " (compare with '==')"
            raise _problem(f"unexpected character {char!r} at {pos}{hint}", pos, field_name)
        kind = match.lastgroup
        if kind != "space":
            tokens.append(Token(_KINDS[str(kind)], match.group(), pos))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# --- the parser ---------------------------------------------------------------------------------------

FeatureCheck = Callable[[str], Any]
"""Called with each feature name; raises Invalid (whose first error reason is shown) for an unknown one."""


class _Parser:
    def __init__(self, text: str, check: FeatureCheck, field_name: str) -> None:
        self.text = text
        self.check = check
        self.field = field_name
        self.tokens = tokenize(text, field_name=field_name)
        self.at = 0
        self.depth = 0
        self.features: dict[str, None] = {}

    # helpers
    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def fail(self, reason: str, pos: int, hint: str = "") -> Invalid:
        return _problem(f"{reason} at {pos}" + (f"; {hint}" if hint else ""), pos, self.field)

    def describe(self, token: Token) -> str:
        return "the end of the expression" if token.kind == "end" else repr(token.text)

    def keyword(self, word: str) -> bool:
        return self.token.kind == "name" and self.token.text.lower() == word

    def take_op(self, *ops: str) -> Token | None:
        if self.token.kind == "op" and self.token.text in ops:
            token = self.token
            self.at += 1
            return token
        return None

    def expect(self, op: str) -> Token:
        token = self.take_op(op)
        if token is None:
            raise self.fail(f"expected {op!r}, found {self.describe(self.token)}", self.token.pos)
        return token

    def nested(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"the expression nests deeper than {MAX_DEPTH} levels", pos)

    def want(self, node: Node, wanted: Type, context: str) -> Node:
        actual = type_of(node)
        if actual != wanted:
            if wanted == "condition":
                hint = "compare it, e.g. 'rsi_14 < 30'"
            else:
                hint = "a condition cannot be used as a number"
            raise self.fail(f"{context} needs a {wanted}, found a {actual}", node.pos, hint)
        return node

    # grammar
    def parse(self) -> Node:
        node = self.condition()
        if self.token.kind != "end":
            if self.token.kind == "op" and self.token.text in COMPARISONS:
                raise self.fail("comparisons cannot be chained", self.token.pos, "join them with 'and'")
            if self.token.text == ")":
                raise self.fail("unmatched ')'", self.token.pos)
            raise self.fail(f"expected an operator, 'and' or 'or', found {self.describe(self.token)}",
                            self.token.pos)
        if type_of(node) != "condition":
            raise self.fail("the expression is a number, not a condition", 0,
                            "compare it, e.g. 'close > sma_20'")
        return node

    def condition(self) -> Node:
        node = self.and_expr()
        while self.keyword("or"):
            pos = self.token.pos
            self.at += 1
            right = self.and_expr()
            node = Logic("or", self.want(node, "condition", "'or'"), self.want(right, "condition", "'or'"),
                         pos)
        return node

    def and_expr(self) -> Node:
        node = self.not_expr()
        while self.keyword("and"):
            pos = self.token.pos
            self.at += 1
            right = self.not_expr()
            node = Logic("and", self.want(node, "condition", "'and'"), self.want(right, "condition", "'and'"),
                         pos)
        return node

    def not_expr(self) -> Node:
        if self.keyword("not"):
            pos = self.token.pos
            self.at += 1
            self.nested(pos)
            operand = self.not_expr()
            self.depth -= 1
            return Not(self.want(operand, "condition", "'not'"), pos)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.sum()
        op = self.take_op(*COMPARISONS)
        if op is None:
            return left
        right = self.sum()
        context = f"{op.text!r}"
        return Compare(op.text, self.want(left, "number", context), self.want(right, "number", context),
                       left.pos)

    def sum(self) -> Node:
        node = self.product()
        while (op := self.take_op("+", "-")) is not None:
            right = self.product()
            node = Arithmetic(op.text, self.want(node, "number", repr(op.text)),
                              self.want(right, "number", repr(op.text)), node.pos)
        return node

    def product(self) -> Node:
        node = self.unary()
        while (op := self.take_op("*", "/")) is not None:
            right = self.unary()
            node = Arithmetic(op.text, self.want(node, "number", repr(op.text)),
                              self.want(right, "number", repr(op.text)), node.pos)
        return node

    def unary(self) -> Node:
        minus = self.take_op("-")
        if minus is None:
            return self.primary()
        self.nested(minus.pos)
        operand = self.unary()
        self.depth -= 1
        return Negate(self.want(operand, "number", "'-'"), minus.pos)

    def primary(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.at += 1
            return Number(float(token.text), token.pos)
        if token.kind == "op" and token.text == "(":
            self.at += 1
            self.nested(token.pos)
            node = self.condition()
            self.depth -= 1
            if self.token.kind == "op" and self.token.text in COMPARISONS:
                raise self.fail("comparisons cannot be chained", self.token.pos, "join them with 'and'")
            if self.take_op(")") is None:
                raise self.fail("expected ')'", self.token.pos,
                                f"to close the '(' at {token.pos}, found {self.describe(self.token)}")
            return node
        if token.kind == "name":
            if token.text.lower() in KEYWORDS:
                raise self.fail(f"expected a number, feature or '(', found the keyword {token.text!r}",
                                token.pos)
            self.at += 1
            if self.token.kind == "op" and self.token.text == "(":
                return self.call(token)
            return self.feature(token)
        raise self.fail(f"expected a number, feature or '(', found {self.describe(token)}", token.pos)

    def feature(self, token: Token) -> Feature:
        name = token.text.lower()
        if name not in self.features:
            try:
                self.check(name)
            except Invalid as unknown:
                reason = (unknown.errors or [{"reason": unknown.detail}])[0]["reason"]
                raise self.fail(f"unknown feature {token.text!r}", token.pos, reason) from None
            self.features[name] = None
        return Feature(name, token.pos)

    def call(self, name: Token) -> Call:
        function = name.text.lower()
        if function not in FUNCTIONS:
            known = ", ".join(FUNCTIONS)
            raise self.fail(f"unknown function {name.text!r}", name.pos, f"the functions are {known}")
        opening = self.expect("(")
        self.nested(opening.pos)
        args: list[Node] = []
        if self.take_op(")") is None:
            while True:
                args.append(self.condition())
                if self.take_op(",") is not None:
                    continue
                if self.take_op(")") is None:
                    raise self.fail("expected ',' or ')'", self.token.pos,
                                    f"in {function}(...), found {self.describe(self.token)}")
                break
        self.depth -= 1
        wanted, _ = FUNCTIONS[function]
        if len(args) != len(wanted):
            plural = "s" if len(wanted) != 1 else ""
            raise self.fail(f"{function} takes {len(wanted)} argument{plural}, got {len(args)}", name.pos)
        if function == "prev":
            bars = args[1]
            if not (isinstance(bars, Number) and bars.value.is_integer() and 1 <= bars.value <= MAX_PREV):
                raise self.fail("prev(x, n): n must be a whole number of bars", bars.pos,
                                f"from 1 to {MAX_PREV}")
            args[1] = Number(float(int(bars.value)), bars.pos)
        else:
            for arg, kind in zip(args, wanted, strict=True):
                self.want(arg, kind, f"{function}()")
        return Call(function, tuple(args), name.pos)


def parse(text: str, check: FeatureCheck, *, field_name: str = "expression") -> Expression:
    """Parse and type-check `text`; `check(name)` validates each feature name (raises Invalid)."""
    if not text.strip():
        raise _problem("the expression is empty at 0; write a condition such as 'close > sma_20'", 0,
                       field_name)
    if len(text) > MAX_LENGTH:
        raise _problem(f"the expression is too long at {MAX_LENGTH}; at most {MAX_LENGTH} characters are "
                       f"allowed and it has {len(text)}", MAX_LENGTH, field_name)
    parser = _Parser(text, check, field_name)
    root = parser.parse()
    return Expression(text, root, tuple(parser.features), lookback(root))


def lookback(node: Node) -> int:
    """Bars before a bar that the functions of `node` read (prev shifts, crossings' previous bar)."""
    if isinstance(node, Number | Feature):
        return 0
    if isinstance(node, Negate | Not):
        return lookback(node.operand)
    if isinstance(node, Arithmetic | Compare | Logic):
        return max(lookback(node.left), lookback(node.right))
    inner = max(lookback(arg) for arg in node.args)
    if node.function == "prev":
        assert isinstance(node.args[1], Number)
        return lookback(node.args[0]) + int(node.args[1].value)
    if node.function in ("crosses_above", "crosses_below"):
        return inner + 1
    return inner


# --- printing -----------------------------------------------------------------------------------------

_PRECEDENCE = {"or": 1, "and": 2, "not": 3, "compare": 4, "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7, "atom": 8}


def _precedence(node: Node) -> int:
    if isinstance(node, Logic | Arithmetic):
        return _PRECEDENCE[node.op]
    if isinstance(node, Not):
        return _PRECEDENCE["not"]
    if isinstance(node, Compare):
        return _PRECEDENCE["compare"]
    if isinstance(node, Negate):
        return _PRECEDENCE["neg"]
    return _PRECEDENCE["atom"]


def _number_text(value: float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def to_text(node: Node) -> str:
    """The expression as text, with only the parentheses its structure needs."""
    if isinstance(node, Number):
        return _number_text(node.value)
    if isinstance(node, Feature):
        return node.name
    if isinstance(node, Call):
        return f"{node.function}({', '.join(to_text(arg) for arg in node.args)})"
    own = _precedence(node)
    if isinstance(node, Negate | Not):
        inner = to_text(node.operand)
        if _precedence(node.operand) < own:
            inner = f"({inner})"
        return f"-{inner}" if isinstance(node, Negate) else f"not {inner}"
    left, right = to_text(node.left), to_text(node.right)
    # Operators group to the left, so an equal-precedence right operand keeps its parentheses.
    if _precedence(node.left) < own or (isinstance(node, Compare) and _precedence(node.left) == own):
        left = f"({left})"
    if _precedence(node.right) <= own:
        right = f"({right})"
    return f"{left} {node.op} {right}"


# --- evaluation ---------------------------------------------------------------------------------------

def _shift(values: Values, bars: int) -> Values:
    out: Values = np.zeros_like(values) if values.dtype == np.bool_ else np.full_like(values, np.nan)
    if bars < len(values):
        out[bars:] = values[:len(values) - bars]
    return out


def _compare(op: str, a: FloatArray, b: FloatArray) -> BoolArray:
    with np.errstate(invalid="ignore"):
        if op == "<":
            return np.less(a, b)
        if op == "<=":
            return np.less_equal(a, b)
        if op == ">":
            return np.greater(a, b)
        if op == ">=":
            return np.greater_equal(a, b)
        if op == "==":
            return np.equal(a, b)
        # NaN != x would be true in IEEE arithmetic; a comparison with a missing value is false here.
        return np.not_equal(a, b) & ~np.isnan(a) & ~np.isnan(b)


def _number(values: Values) -> FloatArray:
    assert values.dtype == np.float64
    return values  # type: ignore[return-value]


def _condition(values: Values) -> BoolArray:
    assert values.dtype == np.bool_
    return values  # type: ignore[return-value]


def _evaluate(node: Node, features: Mapping[str, FloatArray], length: int) -> Values:
    if isinstance(node, Number):
        return np.full(length, node.value, dtype=np.float64)
    if isinstance(node, Feature):
        return np.asarray(features[node.name], dtype=np.float64)
    if isinstance(node, Negate):
        return -_number(_evaluate(node.operand, features, length))
    if isinstance(node, Not):
        return ~_condition(_evaluate(node.operand, features, length))
    if isinstance(node, Logic):
        left = _condition(_evaluate(node.left, features, length))
        right = _condition(_evaluate(node.right, features, length))
        return left & right if node.op == "and" else left | right
    if isinstance(node, Compare):
        return _compare(node.op, _number(_evaluate(node.left, features, length)),
                        _number(_evaluate(node.right, features, length)))
    if isinstance(node, Arithmetic):
        a = _number(_evaluate(node.left, features, length))
        b = _number(_evaluate(node.right, features, length))
        with np.errstate(all="ignore"):
            if node.op == "+":
                return a + b
            if node.op == "-":
                return a - b
            if node.op == "*":
                return a * b
            # x / 0 is undefined, not ±inf: the sign of a zero (min(0, -0.0)) must not decide a rule.
            return np.where(b == 0, np.nan, a / b)
    return _call(node, features, length)


def _call(node: Call, features: Mapping[str, FloatArray], length: int) -> Values:
    if node.function == "prev":
        assert isinstance(node.args[1], Number)
        return _shift(_evaluate(node.args[0], features, length), int(node.args[1].value))
    args = [_number(_evaluate(arg, features, length)) for arg in node.args]
    if node.function == "abs":
        return np.abs(args[0])
    if node.function == "min":
        return np.minimum(args[0], args[1])
    if node.function == "max":
        return np.maximum(args[0], args[1])
    a, b = args
    a_before, b_before = _number(_shift(a, 1)), _number(_shift(b, 1))
    if node.function == "crosses_above":
        return _compare(">", a, b) & _compare("<=", a_before, b_before)
    return _compare("<", a, b) & _compare(">=", a_before, b_before)


def evaluate(expression: Expression, features: Mapping[str, FloatArray], length: int) -> BoolArray:
    """Where the rule holds, bar by bar; `features` maps each of `expression.features` to a column."""
    missing = [name for name in expression.features if name not in features]
    if missing:
        raise KeyError(f"features not computed: {', '.join(missing)}")
    return _condition(_evaluate(expression.root, features, length))
