"""The alerting rules: valid, unit-tested with promtool, shipped by the chart, and each
one documented by a runbook section in docs/operations.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from delivery.promtool import ALERTS, promtool

REPO_ROOT = Path(__file__).resolve().parents[2]
RULE_TESTS = Path(__file__).resolve().parent / "alerts" / "alerts-test.yaml"


def alert_names() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(str(REPO_ROOT / "helm" / "atlas-broker")) as chart:
        manifests = chart.render(values, name="atlas-broker", namespace="platform")
    texts = [text for path, text in manifests.items() if not path.endswith(".txt")]
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def test_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the rule file."""
    result = promtool("check", "rules", str(ALERTS))
    assert 0 == result.returncode, result.stdout + result.stderr


def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    """`promtool test rules` passes: every alert fires on a failing input and stays quiet
    on a healthy or borderline one."""
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert 0 == result.returncode, result.stdout + result.stderr


def test_every_alert_has_unit_tests_that_expect_it_to_fire_and_to_stay_quiet() -> None:
    """Each alert appears in the promtool tests once with expected alerts and once with none."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert set(alert_names()) == fires
    assert set(alert_names()) == quiet


def test_every_alert_has_a_runbook_section() -> None:
    """docs/operations.md has a heading named after each alert, which its runbook_url targets."""
    headings = re.findall(r"^#+ (\S+)", (REPO_ROOT / "docs" / "operations.md").read_text(), re.M)
    assert [] == [name for name in alert_names() if name not in headings]


def test_prometheus_rule_is_off_by_default() -> None:
    """Without `prometheusRule.enabled` the chart renders no PrometheusRule."""
    assert [] == [obj for obj in render({}) if obj["kind"] == "PrometheusRule"]


def test_prometheus_rule_carries_exactly_the_tested_rules() -> None:
    """Enabled, the chart's PrometheusRule holds the rule groups promtool tested, with the
    labels the Prometheus Operator selects by."""
    values = {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}
    (rule,) = [obj for obj in render(values) if obj["kind"] == "PrometheusRule"]
    assert yaml.safe_load(ALERTS.read_text())["groups"] == rule["spec"]["groups"]
    assert "kube-prometheus-stack" == rule["metadata"]["labels"]["release"]


def test_runbook_links_point_at_the_configured_copy_of_the_operations_guide() -> None:
    """With `prometheusRule.runbookUrl`, every alert links to that URL and its own anchor."""
    base = "https://git.example.internal/platform/atlas-broker/blob/main/docs/operations.md"
    values = {"prometheusRule": {"enabled": True, "runbookUrl": base}}
    (rule,) = [obj for obj in render(values) if obj["kind"] == "PrometheusRule"]
    links = {
        r["alert"]: r["annotations"]["runbook_url"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
    }
    assert {name: f"{base}#{name.lower()}" for name in alert_names()} == links
