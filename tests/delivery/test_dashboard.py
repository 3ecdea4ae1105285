"""The Grafana dashboard: every panel's query is valid PromQL and names only metrics a
running broker exposes; the chart ships it for Grafana's sidecar when asked."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import yaml

from delivery.promtool import promtool
from stack import Stack

CHART = Path(__file__).resolve().parents[2] / "helm" / "atlas-broker"
DASHBOARD = CHART / "files" / "dashboard.json"
_METRIC = re.compile(r"\b((?:atlas_broker|process)_[a-z0-9_]+)")
_HISTOGRAM_SAMPLES = ("_bucket", "_count", "_sum")


def queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def exposed_names(text: str) -> set[str]:
    """Every sample name /metrics can show: families (from TYPE lines) and their samples."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in _HISTOGRAM_SAMPLES)
            if kind == "counter":
                names.add(name + "_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_panel_query_parses(tmp_path: Path) -> None:
    """promtool accepts each panel's expression (checked as a recording rule)."""
    rules = [{"record": f"dashboard:panel_{i}", "expr": expr} for i, expr in enumerate(queries())]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert 0 == result.returncode, result.stdout + result.stderr


def test_every_metric_a_panel_names_is_exposed_by_a_running_broker(stack: Stack) -> None:
    """Each metric name in the dashboard appears in a live broker's /metrics."""
    broker = stack.start_broker()
    stack.get_token(broker.url, stack.new_realm().name)
    names = exposed_names(httpx.get(f"{broker.url}/metrics").text)
    wanted = {name for expr in queries() for name in _METRIC.findall(expr)}
    assert wanted
    assert [] == sorted(wanted - names)


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="atlas-broker", namespace="platform")
    texts = [text for path, text in manifests.items() if not path.endswith(".txt")]
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def test_dashboard_configmap_carries_the_sidecar_label_and_the_json() -> None:
    """Enabled, the chart renders the dashboard JSON in a ConfigMap labelled for the sidecar."""
    objects = _render({"dashboard": {"enabled": True}})
    (configmap,) = [o for o in objects if o["metadata"]["name"] == "atlas-broker-dashboard"]
    assert "1" == configmap["metadata"]["labels"]["grafana_dashboard"]
    assert json.loads(DASHBOARD.read_text()) == json.loads(configmap["data"]["atlas-broker.json"])


def test_dashboard_is_off_by_default() -> None:
    """Without `dashboard.enabled` no dashboard ConfigMap is rendered."""
    names = [o["metadata"]["name"] for o in _render({})]
    assert "atlas-broker-dashboard" not in names
