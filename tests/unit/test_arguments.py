"""Operator arguments after template rendering: strings coerced to what they mean, or refused by name."""

from __future__ import annotations

import pytest

from bedrock_batch.config import (
    QuotaConfig,
    QuotaSettings,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_optional_float,
    as_optional_int,
    as_optional_str,
    quota_config_for,
)
from bedrock_batch.errors import ConfigError

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


class TestAsBool:
    @pytest.mark.parametrize("value", [True, "True", "true", " yes ", "on", "1", 1])
    def test_true(self, value):
        assert as_bool("strict", value) is True

    @pytest.mark.parametrize("value", [False, "False", "false", "no", "OFF", "0", 0])
    def test_false(self, value):
        assert as_bool("strict", value) is False

    @pytest.mark.parametrize("value", ["maybe", "", None, 2, 0.5])
    def test_anything_else_is_refused_by_name(self, value):
        with pytest.raises(ConfigError, match=r"^strict must be true or false, got "):
            as_bool("strict", value)


class TestAsInt:
    @pytest.mark.parametrize(
        ("value", "expected"), [(300, 300), ("300", 300), (" 48 ", 48), ("48.0", 48), (7.0, 7)]
    )
    def test_integers_in_any_rendering(self, value, expected):
        assert as_int("max_tokens", value) == expected

    @pytest.mark.parametrize("value", ["3.5", 3.5, "many", "", None, True, "inf"])
    def test_non_integers_are_refused_by_name(self, value):
        with pytest.raises(ConfigError, match=r"^max_tokens must be"):
            as_int("max_tokens", value)

    def test_bounds(self):
        assert as_int("timeout_hours", "24", minimum=24, maximum=168) == 24
        with pytest.raises(ConfigError, match=r"^timeout_hours must be between 24 and 168, got '12'$"):
            as_int("timeout_hours", "12", minimum=24, maximum=168)
        with pytest.raises(ConfigError, match=r"^max_attempts must be at least 1, got 0$"):
            as_int("max_attempts", 0, minimum=1)

    @pytest.mark.parametrize("value", [None, "", "None", "null"])
    def test_optional_none_in_any_rendering(self, value):
        assert as_optional_int("timeout_hours", value, minimum=24) is None


class TestAsFloat:
    def test_numbers_in_any_rendering(self):
        assert as_float("poll_interval", "2.5") == 2.5
        assert as_float("poll_interval", 300) == 300.0
        assert as_optional_float("temperature", "None") is None
        assert as_optional_float("temperature", "0.2", minimum=0) == 0.2

    def test_positive_refuses_zero(self):
        with pytest.raises(ConfigError, match=r"^poll_interval must be positive, got '0'$"):
            as_float("poll_interval", "0", positive=True)

    @pytest.mark.parametrize("value", ["fast", "nan", None, False])
    def test_non_numbers_are_refused_by_name(self, value):
        with pytest.raises(ConfigError, match=r"^requests_per_second must be a"):
            as_float("requests_per_second", value)

    def test_minimum(self):
        with pytest.raises(ConfigError, match=r"^temperature must be at least 0, got '-1'$"):
            as_optional_float("temperature", "-1", minimum=0)


def test_as_choice():
    assert as_choice("invocation_type", "Converse", ("InvokeModel", "Converse")) == "Converse"
    with pytest.raises(
        ConfigError, match=r"^invocation_type must be one of \['Converse', 'InvokeModel'\], got 'x'"
    ):
        as_choice("invocation_type", "x", ("InvokeModel", "Converse"))


def test_as_optional_str():
    assert [as_optional_str(v) for v in (None, "", "None", "analytics")] == [None, None, None, "analytics"]


class TestQuotaConfigFor:
    def test_every_form_of_the_argument(self):
        assert quota_config_for(None, MODEL) == QuotaConfig()
        config = QuotaConfig(max_concurrent_jobs=3)
        assert quota_config_for(config, MODEL) is config
        settings = QuotaSettings(per_model={MODEL: {"max_concurrent_jobs": 4}})
        assert quota_config_for(settings, MODEL).max_concurrent_jobs == 4
        assert quota_config_for(settings, "amazon.nova-pro-v1:0").max_concurrent_jobs == 20
        mapping = {"max_concurrent_jobs": 5, "per_model": {MODEL: {"max_concurrent_jobs": 2}}}
        assert quota_config_for(mapping, MODEL).max_concurrent_jobs == 2
        assert quota_config_for(mapping, "amazon.nova-pro-v1:0").max_concurrent_jobs == 5
