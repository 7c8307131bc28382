"""perfgate.fmt: the one way numbers are written for people."""

from __future__ import annotations

import pytest

from perfgate import fmt
from perfgate.models import Saturation

NAN = float("nan")


def sat(
    users: float | None, *, broken: bool = True, censored: str = "no", **kw: object
) -> Saturation:
    return Saturation(
        users=users,
        throughput_rps=kw.pop("rps", 388.5),  # type: ignore[arg-type]
        broken=broken,
        reason="",
        censored=censored,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("func", "cases"),
    [
        (fmt.value, [(3.0, "3"), (0.88812, "0.8881"), (1234.5, "1234"), (None, "–"), (NAN, "–")]),
        (fmt.margin, [(25.0, "+25"), (-12.0, "-12"), (0.0, "+0"), (None, "–")]),
        (fmt.ms, [(3.21, "3.2"), (312.4, "312"), (None, "–")]),
        (fmt.rps, [(42.46, "42.5"), (388.5, "388"), (None, "–")]),
        (fmt.rate, [(0.0, "0 %"), (0.0025, "0.25 %"), (0.01, "1 %"), (1.0, "100 %"), (NAN, "–")]),
        (fmt.users, [(120.0, "120"), (114.25, "114.2"), (None, "–")]),
        (fmt.percent, [(25.0, "+25.0 %"), (-2.94, "-2.9 %"), (None, "–")]),
    ],
)
def test_single_numbers(func, cases) -> None:  # type: ignore[no-untyped-def]
    for number, text in cases:
        assert func(number) == text, (func.__name__, number)


def test_change_and_signed() -> None:
    assert fmt.change(88.8, 100.0) == "-11.2 %"
    assert fmt.change(1.0, 0.0) == "–" and fmt.change(None, 1.0) == "–"
    assert fmt.signed(-100.0, fmt.rps) == "-100" and fmt.signed(14.25, fmt.users) == "+14.2"


def test_interval() -> None:
    assert fmt.interval((110.0, 118.25)) == "110–118.2"
    assert fmt.interval((1.0, 2.5), fmt.ms, ascii_only=True) == "1.0-2.5"
    assert fmt.interval(None) == ""


def test_saturation_users_shows_censoring() -> None:
    assert fmt.saturation_users(sat(114.25)) == "114.2"
    assert fmt.saturation_users(sat(600.0, broken=False, censored="above_max")) == "≥ 600"
    assert fmt.saturation_users(sat(600.0, broken=False), ascii_only=True) == ">= 600"
    assert fmt.saturation_users(sat(10.0, censored="below_start")) == "< 10"
    assert fmt.saturation_users(sat(None)) == "–"


def test_saturation_in_one_phrase() -> None:
    assert fmt.saturation(sat(114.25)) == "114.2 users at 388 req/s"
    with_ci = sat(114.25, users_ci=(110.0, 118.0))
    assert fmt.saturation(with_ci, with_ci=True) == "114.2 users (CI 110–118) at 388 req/s"
    never = sat(195.0, broken=False, censored="above_max", users_ci=(190.0, 200.0))
    assert fmt.saturation(never, with_ci=True, ascii_only=True) == (
        ">= 195 users (CI 190-200) at 388 req/s"
    )
