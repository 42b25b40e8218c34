"""Dollars at the seeds' boundary: converted once, exactly; refusals say why (no bus needed)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from infrafabric.compat.money import to_decimal, to_micros
from infrafabric.compat.schemas import ResourcePolicy, SwarmProfile
from infrafabric.errors import ConfigurationError


@pytest.mark.parametrize(("value", "micros"), [
    (0.35, 350_000),            # binary 0.34999999999999997779..., shortest form 0.35
    (5.0, 5_000_000),
    (0.1, 100_000),
    (2.675, 2_675_000),         # binary 2.67499999999999982236...
    (1e-06, 1),
    (0.0, 0),
    (-0.0, 0),
    (Decimal("0.35"), 350_000),
    (Decimal("1E+3"), 1_000_000_000),
    ("0.35", 350_000),
    ("$1,250.75", 1_250_750_000),
    (3, 3_000_000),
])
def test_amounts_convert_exactly(value: object, micros: int) -> None:
    assert to_micros(value, what="cost") == micros


def test_the_float_is_taken_at_its_shortest_decimal_form_not_its_binary_value() -> None:
    assert Decimal.from_float(0.35) != Decimal("0.35")  # the binary value
    assert to_micros(0.35, what="cost") == to_micros("0.35", what="cost")


@pytest.mark.parametrize(("value", "says"), [
    (float("nan"), "cost must be a finite amount of dollars, got nan"),
    (float("inf"), "cost must be a finite amount of dollars, got inf"),
    (float("-inf"), "cost must be a finite amount of dollars, got -inf"),
    (Decimal("NaN"), "cost must be a finite amount of dollars"),
    (Decimal("-Infinity"), "cost must be a finite amount of dollars"),
    (-0.35, "cost must not be negative, got -0.35"),
    (Decimal("-1"), "cost must not be negative"),
    (-2, "cost must not be negative, got -2"),
    ("-2", "must not be negative"),
    (0.1 + 0.2, "has more than 6 decimals"),  # 0.30000000000000004: refused, never rounded
    (1e-07, "has more than 6 decimals"),
    ("0.0000001", "has more than 6 decimals"),
    (1e16, "is more than the $1,000,000,000"),
    ("nan", "is not a number of dollars"),
    (True, "cost must be an amount of dollars"),
    (None, "cost must be an amount of dollars"),
    ([5.0], "cost must be an amount of dollars"),
])
def test_bad_amounts_are_refused_naming_the_argument(value: object, says: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        to_micros(value, what="cost")
    assert says in str(info.value)
    assert info.value.message.startswith("cost")


def test_a_float_with_too_many_decimals_says_how_to_be_exact() -> None:
    with pytest.raises(ConfigurationError) as info:
        to_micros(0.1 + 0.2, what="max_cost")
    assert info.value.hint is not None and "Decimal" in info.value.hint


def test_micros_read_back_as_exact_decimal_dollars() -> None:
    assert to_decimal(350_000) == Decimal("0.35") and str(to_decimal(10_000_000)) == "10"
    assert to_decimal(-1) == Decimal("-0.000001")


def test_the_seeds_dataclasses_convert_to_the_governors_records() -> None:
    profile = SwarmProfile(swarm_id="session-4-sip", capabilities=["integration:sip"], cost_per_hour=2.0,
                           reputation_score=0.9, current_budget_remaining=10.0, model="haiku").to_profile()
    assert profile.cost_per_hour_micros == 2_000_000 and profile.reputation == Decimal("0.9")
    policy = ResourcePolicy(max_cost_per_task=7.5, min_capability_match=0.7).to_policy()
    assert policy.max_cost_per_task_micros == 7_500_000 and policy.min_capability_match == Decimal("0.7")
    with pytest.raises(ConfigurationError, match="cost_per_hour must be more than zero"):
        SwarmProfile(swarm_id="s", capabilities=[], cost_per_hour=0.0).to_profile()
    with pytest.raises(ConfigurationError, match="reputation_score must be within 0-1"):
        SwarmProfile(swarm_id="s", capabilities=[], cost_per_hour=1.0, reputation_score=1.5).to_profile()
    with pytest.raises(ConfigurationError, match="max_cost_per_task must be a finite amount"):
        ResourcePolicy(max_cost_per_task=float("nan")).to_policy()
