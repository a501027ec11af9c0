"""Input rules from a training schema: types, nulls, ranges with tolerance, categories, shapes."""

from __future__ import annotations

import math

import pytest

from evertrain.train.inputs import InputError, InputSchema, rule_from_schema, value_kind

COLUMNS = {
    "age": {"type": "numeric", "nullable": False, "min": 18.0, "max": 90.0},
    "income": {"type": "numeric", "nullable": True, "min": 0.0, "max": 1000.0},
    "plan": {"type": "categorical", "nullable": False, "categories": ["basic", "pro"]},
    "tier": {"type": "categorical", "nullable": False, "categories": [1, 2, 3]},
    "active": {"type": "boolean", "nullable": False},
    "note": {"type": "string", "nullable": True},
    "seen": {"type": "timestamp", "nullable": False},
}
GOOD = {
    "age": 30,
    "income": None,
    "plan": "pro",
    "tier": 2,
    "active": True,
    "note": "x",
    "seen": "2026-01-02T03:04:05",
}


def schema(**options: object) -> InputSchema:
    opts = {"fallback": "numeric", "range_tolerance": 0.5, "unknown_categories": "accept", **options}
    return InputSchema([rule_from_schema(n, c, **opts) for n, c in COLUMNS.items()])  # type: ignore[arg-type]


def refused(s: InputSchema, row: object) -> InputError:
    with pytest.raises(InputError) as info:
        s.columns([row])
    return info.value


def test_a_good_row_passes_and_is_typed() -> None:
    cols = schema().columns([GOOD])
    assert cols["age"] == [30.0] and isinstance(cols["age"][0], float)
    assert cols["income"] == [None]
    assert math.isclose(cols["seen"][0], 1767323045.0)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"age": "30"}, "instances[0].age", "expected a number, got string '30'"),
        ({"age": True}, "instances[0].age", "got boolean True"),
        ({"age": None}, "instances[0].age", "null is not allowed"),
        ({"age": 10**400}, "instances[0].age", "too large"),
        ({"age": 1e308 * 10}, "instances[0].age", "not finite"),
        ({"age": 500}, "instances[0].age", "outside the accepted range [-18, 126]"),
        ({"plan": 3}, "instances[0].plan", "expected a string category"),
        ({"tier": "2"}, "instances[0].tier", "expected a number category"),
        ({"active": 1}, "instances[0].active", "expected true or false"),
        ({"note": ["a"]}, "instances[0].note", "got array"),
        ({"seen": "yesterday"}, "instances[0].seen", "ISO-8601"),
        ({"plan": {"a": 1}}, "instances[0].plan", "got object"),
    ],
)
def test_a_bad_value_is_refused_naming_field_and_value(change: dict, field: str, words: str) -> None:
    err = refused(schema(), {**GOOD, **change})
    assert err.field == field
    assert words in err.message
    assert err.http_status == 422


def test_a_missing_field_is_named_and_a_missing_nullable_one_is_null() -> None:
    row = {k: v for k, v in GOOD.items() if k != "plan"}
    assert refused(schema(), row).message == "instances[0].plan: missing field (expected a string category)"
    no_income = {k: v for k, v in GOOD.items() if k != "income"}
    assert schema().columns([no_income])["income"] == [None]


def test_values_just_outside_training_range_pass_within_tolerance() -> None:
    s = schema()
    assert s.columns([{**GOOD, "age": 95}])["age"] == [95.0]  # drift is the monitor's business
    assert s.columns([{**GOOD, "age": 126}])["age"] == [126.0]
    refused(s, {**GOOD, "age": 126.5})
    assert schema(range_tolerance=None).columns([{**GOOD, "age": 10_000}])["age"] == [10_000.0]


def test_unknown_categories_follow_the_setting() -> None:
    assert schema().columns([{**GOOD, "plan": "enterprise"}])["plan"] == ["enterprise"]
    err = refused(schema(unknown_categories="refuse"), {**GOOD, "plan": "enterprise"})
    assert "not a category seen in training ('basic', 'pro')" in err.message


def test_array_instances_are_taken_in_feature_order_and_wrong_lengths_refused() -> None:
    s = schema()
    row = [GOOD[k] for k in COLUMNS]
    assert s.columns([row])["plan"] == ["pro"]
    assert refused(s, row[:-1]).field == "instances[0]"
    assert refused(s, "text").message.startswith("instances[0]: expected an object of features, got string")


def test_later_instances_are_named_by_their_index() -> None:
    with pytest.raises(InputError) as info:
        schema().columns([GOOD, GOOD, {**GOOD, "age": "old"}])
    assert info.value.field == "instances[2].age"


def test_example_row_is_valid_for_warm_up() -> None:
    s = schema()
    assert s.columns([s.example()])
    assert set(s.describe()) == set(COLUMNS)
    assert s.describe()["age"]["accepted_max"] == 126.0


def test_error_messages_name_the_json_kind_of_a_bad_value() -> None:
    kinds = [value_kind(v) for v in (None, True, 1, 1.5, "x", [1], {"a": 1})]
    assert kinds == ["null", "boolean", "number", "number", "string", "array", "object"]
