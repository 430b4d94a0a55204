"""The rule language: parsing, refusals with positions, printing back, and vectorised evaluation."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pattern_validator import rules
from pattern_validator.rules import (
    Arithmetic,
    Call,
    Compare,
    Feature,
    Logic,
    Negate,
    Node,
    Not,
    Number,
)
from pattern_validator.user_rules import check_feature

from aitrading.errors import Invalid
from aitrading.market.bars import FloatArray

FEATURES = ("close", "open", "high", "low", "volume", "sma_5", "rsi_14", "zscore_20", "return_1")


def parse(text: str) -> rules.Expression:
    return rules.parse(text, check_feature)


def refusal(text: str) -> dict[str, object]:
    with pytest.raises(Invalid) as caught:
        parse(text)
    errors = caught.value.errors
    assert errors is not None and len(errors) == 1 and errors[0]["field"] == "expression"
    return errors[0]


# --- parsing and refusals -----------------------------------------------------------------------------

def test_the_examples_parse_into_typed_trees_reading_their_features() -> None:
    expression = parse("rsi_14 < 30 and close > sma_200")
    assert expression.root == Logic("and", Compare("<", Feature("rsi_14"), Number(30)),
                                    Compare(">", Feature("close"), Feature("sma_200")))
    assert expression.features == ("rsi_14", "close", "sma_200")
    crossing = parse("crosses_above(sma_10, sma_30)")
    assert crossing.root == Call("crosses_above", (Feature("sma_10"), Feature("sma_30")))
    assert crossing.lookback == 1
    assert parse("not (zscore_20 > 2) or volume > 2 * sma_20").features == ("zscore_20", "volume", "sma_20")
    assert parse("prev(close, 5) < close and abs(return_1) >= 0.02").lookback == 5
    assert parse("RSI_14 < 30 AND Close > 1").features == ("rsi_14", "close")


def test_precedence_multiplication_before_addition_before_comparison_before_not_and_or() -> None:
    root = parse("not close + 2 * open > 3 or high < 1 and low > 0").root
    assert root == Logic(
        "or",
        Not(Compare(">", Arithmetic("+", Feature("close"), Arithmetic("*", Number(2), Feature("open"))),
                    Number(3))),
        Logic("and", Compare("<", Feature("high"), Number(1)), Compare(">", Feature("low"), Number(0))))
    assert parse("close - open - 1 > 0").root == Compare(
        ">", Arithmetic("-", Arithmetic("-", Feature("close"), Feature("open")), Number(1)), Number(0))


@pytest.mark.parametrize(("text", "position", "words"), [
    ("rsi_x < 30", 0, "unknown feature 'rsi_x' at 0"),
    ("close > foo_bar", 8, "unknown feature 'foo_bar' at 8"),
    ("(close > sma_20 and (open < 3)", 30, "expected ')' at 30"),
    ("close > (sma_20 + 1", 19, "expected ')' at 19"),
    ("foo(close) > 1", 0, "unknown function 'foo'"),
    ("close > 1 < 2", 10, "comparisons cannot be chained at 10"),
    ("close", 0, "a number, not a condition"),
    ("close and open > 1", 0, "'and' needs a condition, found a number at 0"),
    ("close + (open > 1) > 2", 9, "'+' needs a number, found a condition at 9"),
    ("close > ", 8, "expected a number, feature or '(', found the end of the expression at 8"),
    ("close >> 1", 7, "at 7"),
    ("close > 1)", 9, "unmatched ')' at 9"),
    ("close = 1", 6, "unexpected character '=' at 6"),
    ("close > 1 && open > 1", 10, "unexpected character '&' at 10"),
    ("close > 14rsi", 8, "malformed number '14rsi' at 8"),
    ("prev(close, 0) > 1", 12, "prev(x, n): n must be a whole number of bars at 12"),
    ("prev(close, 2.5) > 1", 12, "at 12"),
    ("abs(close, open) > 1", 0, "abs takes 1 argument, got 2 at 0"),
    ("crosses_above(close) ", 0, "crosses_above takes 2 arguments, got 1 at 0"),
    ("crosses_above(close > 1, open)", 14, "crosses_above() needs a number, found a condition at 14"),
    ("min(close open) > 1", 10, "expected ',' or ')' at 10"),
    ("close > ²", 8, "unexpected character '²' at 8"),
    ("close > ١٢", 8, "at 8"),
    ("", 0, "the expression is empty"),
    ("   ", 0, "the expression is empty"),
    ("close > 1 and", 13, "found the end of the expression at 13"),
    ("not", 3, "at 3"),
])
def test_refusals_name_the_position_and_what_is_wrong(text: str, position: int, words: str) -> None:
    error = refusal(text)
    assert error["position"] == position
    assert words in str(error["reason"])


def test_length_and_depth_are_limited() -> None:
    long = "close > 1" + " and close > 1" * 40
    assert len(long) > rules.MAX_LENGTH
    assert refusal(long)["position"] == rules.MAX_LENGTH
    deep = "(" * 40 + "close > 1" + ")" * 40
    error = refusal(deep)
    assert "nests deeper than 32 levels" in str(error["reason"])
    assert parse("(" * 20 + "close > 1" + ")" * 20).features == ("close",)
    assert "nests deeper" in str(refusal("not " * 40 + "close > 1")["reason"])
    assert "nests deeper" in str(refusal("-" * 40 + "close > 1")["reason"])


def test_nothing_reaches_python_evaluation() -> None:
    for text in ("__import__('os').system('true') > 1", "close.__class__ > 1", "[close] > 1",
                 "lambda: 1", "close if 1 else open"):
        with pytest.raises(Invalid):
            parse(text)


# --- printing -----------------------------------------------------------------------------------------

def test_printing_keeps_only_the_needed_parentheses() -> None:
    cases = {
        "(close > 1) and ((open < 2))": "close > 1 and open < 2",
        "close - (open - 1) > 0": "close - (open - 1) > 0",
        "(close - open) - 1 > 0": "close - open - 1 > 0",
        "not (close > 1 and open > 1)": "not (close > 1 and open > 1)",
        "-(close + 1) > -2": "-(close + 1) > -2",
        "close > 1 or (open > 1 or high > 1)": "close > 1 or (open > 1 or high > 1)",
        "prev(close>1,3)": "prev(close > 1, 3)",
        "close / 2.50 >= 1e3": "close / 2.5 >= 1000",
    }
    for text, printed in cases.items():
        assert rules.to_text(parse(text).root) == printed
        assert parse(printed).root == parse(text).root


# Well-formed trees, built from the grammar's own pieces.
numbers: st.SearchStrategy[Node] = st.recursive(
    st.one_of(st.floats(0, 1e6, allow_nan=False, allow_infinity=False).map(Number),
              st.sampled_from(FEATURES).map(Feature)),
    lambda inner: st.one_of(
        inner.map(Negate),
        st.tuples(st.sampled_from("+-*/"), inner, inner).map(lambda t: Arithmetic(*t)),
        inner.map(lambda x: Call("abs", (x,))),
        st.tuples(st.sampled_from(["min", "max"]), inner, inner).map(lambda t: Call(t[0], (t[1], t[2]))),
        st.tuples(inner, st.integers(1, 5)).map(lambda t: Call("prev", (t[0], Number(float(t[1]))))),
    ),
    max_leaves=6,
)
conditions: st.SearchStrategy[Node] = st.recursive(
    st.one_of(
        st.tuples(st.sampled_from(rules.COMPARISONS), numbers, numbers).map(lambda t: Compare(*t)),
        st.tuples(st.sampled_from(["crosses_above", "crosses_below"]), numbers, numbers)
        .map(lambda t: Call(t[0], (t[1], t[2]))),
    ),
    lambda inner: st.one_of(
        inner.map(Not),
        st.tuples(st.sampled_from(["and", "or"]), inner, inner).map(lambda t: Logic(*t)),
        st.tuples(inner, st.integers(1, 5)).map(lambda t: Call("prev", (t[0], Number(float(t[1]))))),
    ),
    max_leaves=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditions)
def test_any_well_formed_expression_prints_and_parses_back_to_the_same_tree(tree: Node) -> None:
    text = rules.to_text(tree)
    if len(text) > rules.MAX_LENGTH:
        return
    parsed = parse(text)
    assert parsed.root == tree
    assert rules.to_text(parsed.root) == text


JUNK = st.text(alphabet="closepnvurmaxbd_14.2()<>=!-+*/, \tAOR&|", max_size=80)


@settings(max_examples=500, deadline=None)
@given(st.one_of(JUNK, st.text(max_size=120)))
def test_junk_is_refused_with_invalid_and_nothing_else(text: str) -> None:
    try:
        expression = parse(text)
    except Invalid as refused:
        assert refused.errors and isinstance(refused.errors[0]["position"], int)
        assert 0 <= refused.errors[0]["position"] <= max(len(text), rules.MAX_LENGTH)
        return
    assert rules.type_of(expression.root) == "condition"


# --- evaluation ---------------------------------------------------------------------------------------

def _columns(n: int, seed: int) -> dict[str, FloatArray]:
    rng = np.random.default_rng(seed)
    columns = {}
    for name in FEATURES:
        values = rng.normal(0, 2, n).round(1)  # repeated values, so == and crossings happen
        values[rng.random(n) < 0.15] = np.nan
        columns[name] = values
    return columns


def _scalar(node: Node, features: Mapping[str, FloatArray], t: int) -> float | bool:
    """The rule at one bar, one value at a time: the reference for the vectorised evaluator."""
    nan = math.nan
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Feature):
        return float(features[node.name][t])
    if isinstance(node, Negate):
        return -float(_scalar(node.operand, features, t))
    if isinstance(node, Not):
        return not _scalar(node.operand, features, t)
    if isinstance(node, Logic):
        left, right = bool(_scalar(node.left, features, t)), bool(_scalar(node.right, features, t))
        return (left and right) if node.op == "and" else (left or right)
    if isinstance(node, Compare):
        a, b = float(_scalar(node.left, features, t)), float(_scalar(node.right, features, t))
        if math.isnan(a) or math.isnan(b):
            return False
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[node.op]
    if isinstance(node, Arithmetic):
        a, b = np.float64(_scalar(node.left, features, t)), np.float64(_scalar(node.right, features, t))
        if node.op == "/" and b == 0:
            return nan
        with np.errstate(all="ignore"):
            return float({"+": a + b, "-": a - b, "*": a * b, "/": a / b}[node.op])
    if node.function == "prev":
        assert isinstance(node.args[1], Number)
        back = t - int(node.args[1].value)
        if back < 0:
            return False if rules.type_of(node.args[0]) == "condition" else nan
        return _scalar(node.args[0], features, back)
    values = [float(_scalar(arg, features, t)) for arg in node.args]
    if node.function == "abs":
        return abs(values[0])
    if node.function in ("min", "max"):
        if math.isnan(values[0]) or math.isnan(values[1]):
            return nan
        return min(values) if node.function == "min" else max(values)
    if t == 0:
        return False
    before = [float(_scalar(arg, features, t - 1)) for arg in node.args]
    if any(math.isnan(v) for v in (*values, *before)):
        return False
    if node.function == "crosses_above":
        return values[0] > values[1] and before[0] <= before[1]
    return values[0] < values[1] and before[0] >= before[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditions, st.integers(0, 1000))
def test_vectorised_evaluation_equals_bar_by_bar_evaluation(tree: Node, seed: int) -> None:
    n = 40
    features = _columns(n, seed)
    text = rules.to_text(tree)
    if len(text) > rules.MAX_LENGTH:
        return
    held = rules.evaluate(parse(text), features, n)
    assert held.dtype == np.bool_ and held.shape == (n,)
    assert held.tolist() == [bool(_scalar(tree, features, t)) for t in range(n)]


def test_comparisons_with_missing_values_are_false_even_not_equal() -> None:
    features = {"close": np.array([np.nan, 1.0, 2.0]), "open": np.array([1.0, np.nan, 2.0])}
    assert rules.evaluate(parse("close != open"), features, 3).tolist() == [False, False, False]
    assert rules.evaluate(parse("close == open"), features, 3).tolist() == [False, False, True]
    assert rules.evaluate(parse("not close != open"), features, 3).tolist() == [True, True, True]


def test_crossings_fire_on_the_bar_the_order_changes_only() -> None:
    features = {"sma_10": np.array([1.0, 2.0, 3.0, 3.0, 2.0, 1.0]),
                "sma_30": np.array([2.0, 2.0, 2.0, 3.0, 3.0, 0.5])}
    assert rules.evaluate(parse("crosses_above(sma_10, sma_30)"), features, 6).tolist() == \
        [False, False, True, False, False, True]
    assert rules.evaluate(parse("crosses_below(sma_10, sma_30)"), features, 6).tolist() == \
        [False, False, False, False, True, False]


def test_prev_shifts_numbers_and_conditions() -> None:
    features = {"close": np.array([1.0, 5.0, 2.0, 8.0])}
    assert rules.evaluate(parse("prev(close, 1) < close"), features, 4).tolist() == [False, True, False, True]
    assert rules.evaluate(parse("prev(close > 3, 2)"), features, 4).tolist() == [False, False, False, True]
    assert rules.evaluate(parse("prev(close, 9) < 100"), features, 4).tolist() == [False] * 4


def test_evaluating_without_a_needed_feature_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        rules.evaluate(parse("close > open"), {"close": np.zeros(3)}, 3)
