"""The operator's network policy: what it denies by default, what it opens, what it refuses."""

from __future__ import annotations

import ipaddress

import pytest

from stoker.errors import ConfigError
from stoker.workers import network


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STOKER_NETWORK", "STOKER_NETWORK_DENY", "STOKER_NETWORK_ALLOW", "STOKER_NETWORK_SUBNET",
                 "STOKER_NETWORK_POOL"):
        monkeypatch.delenv(name, raising=False)


def test_the_defaults_deny_metadata_other_workers_and_the_platforms_own_hosts() -> None:
    policy = network.policy_from_env(["redis://:pw@10.1.2.3:6379/0", "postgresql://u:p@10.1.2.4:5432/db"])
    assert policy.mode == "egress" and policy.allow == () and policy.pool == 8
    denied = {str(n) for n in policy.deny}
    assert {"169.254.0.0/16", "100.100.100.200/32", "10.213.0.0/16", "10.1.2.3/32", "10.1.2.4/32"} <= denied


def test_cluster_urls_name_every_host() -> None:
    assert network.platform_hosts(["redis+cluster://:pw@a:7000,b:7001/0", "sqlite:////x/ledger.db", ""]) == ["a", "b"]


def test_allow_entries_take_ports_and_refuse_the_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOKER_NETWORK_ALLOW", "10.0.0.5:5432, 192.168.7.0/24")
    allow = network.policy_from_env([]).allow
    assert allow == (network.Destination(ipaddress.IPv4Network("10.0.0.5/32"), 5432),
                     network.Destination(ipaddress.IPv4Network("192.168.7.0/24"), None))
    for bad, said in (("127.0.0.1:5432", "loopback"), ("10.0.0.5:99999", "port"),
                      ("no-such-host.invalid", "resolves")):
        monkeypatch.setenv("STOKER_NETWORK_ALLOW", bad)
        with pytest.raises(ConfigError) as e:
            network.policy_from_env([])
        assert "STOKER_NETWORK_ALLOW" in e.value.message and said in e.value.message


@pytest.mark.parametrize(("name", "value", "said"), [
    ("STOKER_NETWORK", "none", "egress"),
    ("STOKER_NETWORK_SUBNET", "8.8.0.0/16", "private"),
    ("STOKER_NETWORK_SUBNET", "banana", "IPv4 network"),
    ("STOKER_NETWORK_POOL", "-1", "whole number"),
    ("STOKER_NETWORK_DENY", "no-such-host.invalid", "resolves"),
])
def test_bad_settings_are_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                  said: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as e:
        network.policy_from_env([])
    assert name in e.value.message and said in e.value.message


def test_the_ruleset_drops_the_host_and_workers_and_masquerades_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOKER_NETWORK_ALLOW", "10.0.0.5:5432")
    policy = network.policy_from_env(["redis://10.9.9.9:6379"])
    net = network.NodeNetwork(policy, "ab12c", ipaddress.IPv4Network("10.213.4.0/22"), 1400)
    rules = net.ruleset()
    assert net.gateway == "10.213.4.1" and net.bridge == "stkab12c"
    input_chain = rules.split("chain input", 1)[1].split("chain forward", 1)[0]
    # the allow entry first, then everything else from the bridge to the host is dropped
    assert input_chain.index("ip daddr 10.0.0.5/32 th dport 5432 accept") < input_chain.index('iifname "stkab12c" drop')
    forward = rules.split("chain forward", 1)[1].split("chain postrouting", 1)[0]
    lines = [line.strip() for line in forward.splitlines() if "iifname" in line or "oifname" in line]
    assert lines[0] == 'oifname "stkab12c" ct state established,related accept'
    assert lines[1] == 'oifname "stkab12c" drop'  # nothing in, workers included
    assert lines[-1] == 'iifname "stkab12c" accept' and 'iifname "stkab12c" ip daddr @deny drop' in lines
    assert "10.9.9.9/32" in rules.split("set deny", 1)[1].split("\n", 1)[0]
    assert 'ip saddr 10.213.4.0/22 oifname != "stkab12c" masquerade' in rules
