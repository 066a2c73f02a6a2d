"""The [dc] settings: DC domains, validated, and passed intact to child processes."""

from __future__ import annotations

import pytest

from courier.errors import ConfigError
from courier.settings import load_settings, settings_env


def test_dc_domains_survive_the_environment_a_child_process_gets(monkeypatch):
    s = load_settings(dc={"domains": ["dcA", "dcB"], "nats_urls": {"dcA": "nats://a:4222"}})
    for key, value in settings_env(s).items():
        monkeypatch.setenv(key, value)
    assert load_settings().dc == s.dc


@pytest.mark.parametrize("domains", [["dcA", "dcA"], ["dc.A"], [""]])
def test_dc_domains_must_be_distinct_jetstream_domain_names(domains):
    with pytest.raises(ConfigError, match=r"dc\.domains"):
        load_settings(dc={"domains": domains})
