"""Tests for perfgate.load.templates: grammar, types, vars, errors, request picking."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from perfgate.load.templates import (
    MISSING,
    RequestPicker,
    UserContext,
    compile_capture,
    compile_requests,
    compile_template,
)
from perfgate.models import RequestSpec


def render(value: object, ctx: UserContext | None = None) -> object:
    return compile_template(value, "x").render(ctx or UserContext())


def test_plain_values_are_constant_and_not_copied() -> None:
    body = {"a": 1, "b": ["x", {"c": None}], "d": True}
    t = compile_template(body, "users.requests[0].json")
    assert t.constant
    assert t.needs == frozenset()
    assert t.render(UserContext()) == body
    assert compile_template("/health", "p").render(UserContext()) == "/health"
    assert compile_template("a }} b", "p").render(UserContext()) == "a }} b"


def test_rand_int_keeps_type_and_range() -> None:
    random.seed(1)
    t = compile_template("{{ rand_int(3, 5) }}", "x")
    values = [t.render(UserContext()) for _ in range(300)]
    assert all(type(v) is int for v in values)
    assert set(values) == {3, 4, 5}


def test_rand_float_with_and_without_ndigits() -> None:
    random.seed(2)
    plain = compile_template("{{rand_float(1.5, 2)}}", "x")
    rounded = compile_template("{{ rand_float(100, 200, 2) }}", "x")
    for _ in range(200):
        v = plain.render(UserContext())
        assert isinstance(v, float) and 1.5 <= v <= 2.0
        r = rounded.render(UserContext())
        assert isinstance(r, float) and 100 <= r <= 200
        assert r == round(r, 2)
    assert len({rounded.render(UserContext()) for _ in range(50)}) > 10


def test_choice_picks_every_option_with_its_type() -> None:
    random.seed(3)
    t = compile_template("{{ choice('buy', \"sell\", 7) }}", "x")
    seen = Counter(t.render(UserContext()) for _ in range(600))
    assert set(seen) == {"buy", "sell", 7}
    assert min(seen.values()) > 120


def test_user_index_seq_and_vars() -> None:
    ctx = UserContext(user_index=4)
    ctx.seq = 11
    ctx.vars["order_id"] = 987
    assert render("{{ user_index }}", ctx) == 4
    assert render("{{ seq }}", ctx) == 11
    assert render("{{ var.order_id }}", ctx) == 987
    assert compile_template("/o/{{ var.order_id }}", "x").needs == frozenset({"order_id"})


def test_mixed_text_becomes_a_string() -> None:
    ctx = UserContext(user_index=2)
    ctx.vars["id"] = 55
    assert render("/orders/{{ var.id }}?u={{user_index}}", ctx) == "/orders/55?u=2"
    assert render("{{ rand_int(7, 7) }}{{ rand_int(1, 1) }}", ctx) == "71"


def test_nested_json_renders_fresh_values_and_keeps_constants() -> None:
    random.seed(4)
    body = {
        "symbol": "BTC-USDT",
        "price": "{{ rand_float(10, 20, 1) }}",
        "legs": [{"qty": "{{ rand_int(1, 3) }}"}, "fixed"],
    }
    t = compile_template(body, "users.requests[0].json")
    assert not t.constant
    a = t.render(UserContext())
    assert a["symbol"] == "BTC-USDT"
    assert isinstance(a["price"], float)
    assert isinstance(a["legs"][0]["qty"], int)
    assert a["legs"][1] == "fixed"
    prices = {t.render(UserContext())["price"] for _ in range(50)}
    assert len(prices) > 5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{{ foo(1) }}", "unknown template function 'foo' in users.requests[2].json.price"),
        ("{{ bar }}", "unknown template name 'bar' in users.requests[2].json.price"),
        ("{{ rand_int(1) }}", "rand_int needs two integers"),
        ("{{ rand_int(1.5, 2) }}", "rand_int needs two integers"),
        ("{{ rand_int(5, 1) }}", "must not exceed"),
        ("{{ rand_float(1, 2, 1.5) }}", "ndigits"),
        ("{{ choice() }}", "choice needs at least one value"),
        ("{{ rand_int(1, 2 }}", "bad template syntax"),
        ("{{ rand_int(1,, 2) }}", "bad template syntax"),
        ("{{ rand_int(1, 2,) }}", "bad template syntax"),
        ("{{ rand_int(seq, 2) }}", "arguments must be literals"),
        ("{{ 1 + 2 }}", "bad template syntax"),
        ("{{ __import__('os') }}", "unknown template function '__import__'"),
        ("{{ }}", "empty template"),
        ("{{ rand_int(1, 2)", "unclosed"),
        ("price {{ seq", "unclosed"),
        ("{{ var. }}", "bad template syntax"),
    ],
)
def test_errors_name_the_key(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"users\.requests\[2\]\.json\.price") as info:
        compile_template({"price": value}, "users.requests[2].json")
    assert message in str(info.value)


def test_capture_paths() -> None:
    data = {"id": 7, "order": {"fills": [{"px": 1.5}, {"px": 2.5}]}}
    assert compile_capture("id", "c")(data) == 7
    assert compile_capture("order.fills.1.px", "c")(data) == 2.5
    assert compile_capture("order.fills.-1.px", "c")(data) == 2.5
    assert compile_capture("order.nope", "c")(data) is MISSING
    assert compile_capture("order.fills.9.px", "c")(data) is MISSING
    assert compile_capture("id.deeper", "c")(data) is MISSING
    assert compile_capture("id", "c")(None) is MISSING
    with pytest.raises(ValueError, match="empty part"):
        compile_capture("a..b", "users.requests[0].capture.x")


def test_compile_requests_checks_vars_are_captured() -> None:
    place = RequestSpec(name="place", method="post", path="/orders", capture={"oid": "id"})
    cancel = RequestSpec(name="cancel", method="DELETE", path="/orders/{{ var.oid }}")
    compiled = compile_requests((place, cancel))
    assert compiled[0].method == "POST"
    assert compiled[1].needs == frozenset({"oid"})

    orphan = RequestSpec(name="get", path="/x/{{ var.missing }}")
    with pytest.raises(ValueError, match=r"users.requests\[1\] uses var.missing but no request"):
        compile_requests((place, orphan))

    only_needy = RequestSpec(name="c", path="/{{ var.a }}", capture={"a": "id"})
    with pytest.raises(ValueError, match="at least one must need none"):
        compile_requests((only_needy,))

    # b is captured only by a request that needs a, which nobody can capture first
    root = RequestSpec(name="root", path="/")
    chain = RequestSpec(name="chain", path="/{{ var.a }}", capture={"b": "id"})
    chain2 = RequestSpec(name="chain2", path="/{{ var.b }}", capture={"a": "id"})
    with pytest.raises(ValueError, match="only captured by requests that"):
        compile_requests((root, chain, chain2))


def test_picker_respects_weights_and_eligibility() -> None:
    random.seed(5)
    specs = (
        RequestSpec(name="a", weight=1),
        RequestSpec(name="b", weight=3),
        RequestSpec(name="c", path="/{{ var.x }}", weight=4),
        RequestSpec(name="d", weight=1, capture={"x": "id"}),
    )
    picker = RequestPicker(compile_requests(specs))
    first = Counter(picker.pick().name for _ in range(5000))  # type: ignore[union-attr]
    assert "c" not in first  # needs var.x, not captured yet
    assert first["b"] / first["a"] == pytest.approx(3.0, rel=0.15)
    picker.refresh(frozenset({"x"}))
    later = Counter(picker.pick().name for _ in range(9000))  # type: ignore[union-attr]
    assert later["c"] / later["a"] == pytest.approx(4.0, rel=0.15)


def test_picker_with_a_single_request_and_with_none() -> None:
    one = RequestPicker(compile_requests((RequestSpec(name="only"),)))
    assert one.pick().name == "only"  # type: ignore[union-attr]
    assert RequestPicker(()).pick() is None
