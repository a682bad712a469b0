"""The fault vocabulary: parsing, the three spellings, and the merge rules."""

from __future__ import annotations

import pytest

from payflow.faults import (
    ALL_ENV_KEYS,
    BY_NAME,
    FAULTS,
    FaultConfigError,
    FaultSet,
    crd_faults_schema,
    helm_faults_schema,
    helm_values_to_env,
    merge,
)

SEED_KEYS = {
    "INJECT_OOM",
    "INJECT_LATENCY_MS",
    "INJECT_ERROR_RATE",
    "INJECT_CPU_BURN",
    "INJECT_PANIC",
    "INJECT_DB_TIMEOUT",
}


def test_the_six_faults_keep_the_seed_variables() -> None:
    assert len(FAULTS) == 6
    assert {f.seed_key for f in FAULTS} == SEED_KEYS
    assert all(k.startswith("INJECT_") for k in ALL_ENV_KEYS)
    assert len(ALL_ENV_KEYS) == sum(len(f.env_keys) for f in FAULTS)  # no key shared by two faults


def test_empty_environment_means_no_fault() -> None:
    faults = FaultSet.from_env({"PATH": "/bin"})
    assert not faults
    assert faults.to_env()["INJECT_OOM"] == "false"
    assert faults.to_env()["INJECT_LATENCY_MS"] == "0"


def test_seed_values_parse() -> None:
    faults = FaultSet.from_env(
        {
            "INJECT_OOM": "true",
            "INJECT_LATENCY_MS": "5000",
            "INJECT_ERROR_RATE": "0.3",
            "INJECT_CPU_BURN": "TRUE",
            "INJECT_PANIC": "1",
            "INJECT_DB_TIMEOUT": "yes",
        }
    )
    assert faults.names == ("oom", "latency", "errorRate", "cpuBurn", "panic", "dbTimeout")
    assert faults.value("latency", "delayMs") == 5000
    assert faults.value("errorRate", "ratio") == 0.3
    assert faults.value("oom", "growthKiBPerRequest") == 256  # the default


def test_zero_latency_and_zero_error_rate_are_off() -> None:
    faults = FaultSet.from_env({"INJECT_LATENCY_MS": "0", "INJECT_ERROR_RATE": "0.0", "INJECT_OOM": "false"})
    assert faults.names == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INJECT_LATENCY_MS": "-1"}, "INJECT_LATENCY_MS: -1 is outside [0, 60000] ms"),
        ({"INJECT_LATENCY_MS": "fast"}, "INJECT_LATENCY_MS: expected an integer"),
        ({"INJECT_LATENCY_MS": "1.5"}, "INJECT_LATENCY_MS: expected an integer"),
        ({"INJECT_ERROR_RATE": "1.5"}, "INJECT_ERROR_RATE: 1.5 is outside [0.0, 1.0]"),
        ({"INJECT_ERROR_RATE": "nan"}, "INJECT_ERROR_RATE: nan is outside"),
        ({"INJECT_OOM": "maybe"}, "INJECT_OOM: expected true or false"),
        ({"INJECT_TYPO": "1"}, "INJECT_TYPO: unknown fault key"),
        (
            {"INJECT_CPU_BURN": "true", "INJECT_CPU_BURN_CORES": "64"},
            "INJECT_CPU_BURN_CORES: 64.0 is outside",
        ),
    ],
)
def test_bad_env_is_refused_with_the_key_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(FaultConfigError) as err:
        FaultSet.from_env(env)
    assert any(e.startswith(message) for e in err.value.errors), err.value.errors


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(FaultConfigError) as err:
        FaultSet.from_env({"INJECT_LATENCY_MS": "x", "INJECT_PANIC": "perhaps"})
    assert len(err.value.errors) == 2


def test_env_round_trip_for_every_fault() -> None:
    spec = {f.name: {p.key: p.maximum for p in f.params} for f in FAULTS}
    faults = FaultSet.from_spec(spec)
    assert FaultSet.from_env(faults.to_env()) == faults
    assert FaultSet.from_spec(faults.to_spec()) == faults


def test_spec_fills_defaults_and_refuses_nonsense() -> None:
    faults = FaultSet.from_spec({"oom": {}, "latency": {"delayMs": 200}})
    assert faults.to_dict() == {
        "oom": {"growthKiBPerRequest": 256, "floorKiBPerSecond": 1024},
        "latency": {"delayMs": 200, "jitterMs": 0},
    }
    with pytest.raises(FaultConfigError) as err:
        FaultSet.from_spec({"latency": {"delayMs": 0, "color": 1}, "meteor": {}})
    assert sorted(err.value.errors) == [
        "faults.latency.color: unknown parameter",
        "faults.latency.delayMs: must be above 0 for the fault to act",
        "faults.meteor: unknown fault (known: oom, latency, errorRate, cpuBurn, panic, dbTimeout)",
    ]


def test_fault_sets_are_immutable_and_hash_by_content() -> None:
    a = FaultSet.from_spec({"latency": {"delayMs": 10}})
    b = FaultSet.from_env({"INJECT_LATENCY_MS": "10"})
    assert a == b
    assert hash(a) == hash(b)
    assert a.digest() == b.digest()
    with pytest.raises(TypeError):
        a.active["latency"]["delayMs"] = 5  # type: ignore[index]
    assert a.digest() != FaultSet.from_spec({"latency": {"delayMs": 11}}).digest()


def test_merge_takes_the_largest_latency_and_combines_error_ratios() -> None:
    one = FaultSet.from_spec({"latency": {"delayMs": 100, "jitterMs": 50}, "errorRate": {"ratio": 0.3}})
    two = FaultSet.from_spec({"latency": {"delayMs": 300}, "errorRate": {"ratio": 0.3}, "oom": {}})
    merged = merge([("b", two), ("a", one)])
    assert merged.faults.to_dict()["latency"] == {"delayMs": 300, "jitterMs": 50}
    assert merged.faults.value("errorRate", "ratio") == pytest.approx(0.51)
    assert merged.faults.names == ("oom", "latency", "errorRate")
    assert merged.sources == {"latency": ("a", "b"), "errorRate": ("a", "b"), "oom": ("b",)}


def test_merge_of_nothing_is_the_baseline() -> None:
    assert merge([]).faults == FaultSet()
    assert merge([("only", FaultSet())]).sources == {}


def test_merge_is_order_independent_and_idempotent() -> None:
    sets = [
        ("x", FaultSet.from_spec({"panic": {"probability": 0.1}})),
        ("y", FaultSet.from_spec({"panic": {"probability": 0.2, "meanIntervalSeconds": 5}})),
    ]
    assert merge(sets).faults == merge(list(reversed(sets))).faults
    single = FaultSet.from_spec({"cpuBurn": {"cores": 2}})
    assert merge([("a", single)]).faults == single


def test_crd_schema_covers_every_parameter() -> None:
    schema = crd_faults_schema()
    assert schema["minProperties"] == 1
    assert set(schema["properties"]) == set(BY_NAME)
    for fault in FAULTS:
        props = schema["properties"][fault.name]["properties"]
        assert set(props) == {p.key for p in fault.params}
        for p in fault.params:
            assert props[p.key]["maximum"] == p.maximum
            assert p.env in props[p.key]["description"]
    assert schema["properties"]["latency"]["required"] == ["delayMs"]


def test_helm_values_map_to_the_seed_keys() -> None:
    schema = helm_faults_schema()
    assert schema["additionalProperties"] is False
    assert "enabled" in schema["properties"]["oom"]["properties"]
    assert "enabled" not in schema["properties"]["latency"]["properties"]
    env = helm_values_to_env({"oom": {"enabled": True}, "latency": {"delayMs": 0}})
    assert env["INJECT_OOM"] == "true"
    assert env["INJECT_LATENCY_MS"] == "0"
    assert env["INJECT_OOM_GROWTH_KIB_PER_REQUEST"] == "256"
