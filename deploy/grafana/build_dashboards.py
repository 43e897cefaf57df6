"""Write querylift's Grafana dashboards (JSON model) into deploy/grafana/dashboards/.

Run ``python deploy/grafana/build_dashboards.py`` after changing a panel; tests/test_deploy.py fails when the
committed JSON differs from what this script builds, and when a query names a metric that
services/infra/metrics.py does not define.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "querylift-prometheus"}
OUT = Path(__file__).resolve().parent / "dashboards"
P = 'project=~"$project"'
RI = "$__rate_interval"


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""
    width: int = 12
    height: int = 8
    stacked: bool = False
    bars: bool = False
    max: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "min": 0}
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "bars" if panel.bars else "line",
            "fillOpacity": 60 if panel.bars else 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": True,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
        }
        options: dict[str, Any] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options | panel.extra,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
            }
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def dashboard(
    uid: str, title: str, description: str, panels: list[Panel], *, project_var: bool = True
) -> dict[str, Any]:
    laid_out = []
    x = y = row_height = 0
    for i, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        laid_out.append(_panel(panel, i, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    variables = []
    if project_var:
        variables.append(
            {
                "name": "project",
                "label": "Project",
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": "label_values(querylift_answers_total, project)", "refId": "projects"},
                "definition": "label_values(querylift_answers_total, project)",
                "refresh": 2,
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "sort": 1,
            }
        )
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["querylift"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["querylift"], "asDropdown": True, "title": "querylift"}],
        "templating": {"list": variables},
        "panels": laid_out,
    }


def _ratio(numerator: str, denominator: str, by: str, window: str = RI) -> str:
    return f"sum by ({by}) (rate({numerator}[{window}])) / sum by ({by}) (rate({denominator}[{window}]))"


def accuracy() -> dict[str, Any]:
    sql_ok = f'querylift_sql_executions_total{{outcome="ok",{P}}}'
    sql_all = f"querylift_sql_executions_total{{{P}}}"
    panels = [
        Panel(
            "SQL success rate",
            [(_ratio(sql_ok, sql_all, "project"), "{{project}}")],
            unit="percentunit",
            max=1,
            description="Share of generated SQL that ran without error, timeout or refusal.",
        ),
        Panel(
            "SQL outcomes",
            [(f"sum by (outcome) (rate({sql_all}[{RI}]))", "{{outcome}}")],
            unit="reqps",
            stacked=True,
        ),
        Panel(
            "Schema-valid SQL",
            [
                (
                    _ratio(
                        f'querylift_sql_schema_valid_total{{valid="true",{P}}}',
                        f"querylift_sql_schema_valid_total{{{P}}}",
                        "project",
                    ),
                    "{{project}}",
                )
            ],
            unit="percentunit",
            max=1,
            description="Answers whose SQL referenced only tables and columns of the current schema.",
        ),
        Panel(
            "Mean user rating (1 h window)",
            [
                (
                    _ratio(
                        f"querylift_feedback_rating_points_total{{{P}}}",
                        f"querylift_feedback_ratings_total{{{P}}}",
                        "project",
                        "1h",
                    ),
                    "{{project}}",
                )
            ],
            max=5,
        ),
        Panel(
            "Ratings received per hour",
            [(f"sum by (rating) (increase(querylift_feedback_ratings_total{{{P}}}[1h]))", "{{rating}} ★")],
            bars=True,
            stacked=True,
        ),
        Panel(
            "Thumbs up share (1 h window)",
            [
                (
                    _ratio(
                        f'querylift_feedback_thumbs_total{{thumbs="up",{P}}}',
                        f"querylift_feedback_thumbs_total{{{P}}}",
                        "project",
                        "1h",
                    ),
                    "{{project}}",
                )
            ],
            unit="percentunit",
            max=1,
        ),
        Panel(
            "Chart judged relevant (1 h window)",
            [
                (
                    _ratio(
                        f'querylift_chart_feedback_total{{relevant="true",{P}}}',
                        f"querylift_chart_feedback_total{{{P}}}",
                        "project",
                        "1h",
                    ),
                    "{{project}}",
                )
            ],
            unit="percentunit",
            max=1,
        ),
        Panel(
            "Corrected SQL received per hour",
            [
                (
                    f"sum by (project) (increase(querylift_feedback_corrections_total{{{P}}}[1h]))",
                    "{{project}}",
                )
            ],
            bars=True,
        ),
        Panel(
            "Answers by A/B arm",
            [(f"sum by (project, arm) (rate(querylift_answers_total{{{P}}}[{RI}]))", "{{project}} {{arm}}")],
            unit="reqps",
            stacked=True,
        ),
        Panel(
            "Errors by code",
            [(f"sum by (code, stage) (rate(querylift_errors_total[{RI}]))", "{{stage}}: {{code}}")],
            unit="reqps",
            stacked=True,
            description="chat.error events (no project label: unknown projects would be unbounded).",
        ),
        Panel(
            "Repairs that changed the SQL",
            [(f"sum by (project) (rate(querylift_sql_repairs_total{{{P}}}[{RI}]))", "{{project}}")],
            unit="reqps",
        ),
        Panel(
            "Answers from verified examples",
            [(f"sum by (project) (rate(querylift_answers_from_examples_total{{{P}}}[{RI}]))", "{{project}}")],
            unit="reqps",
            description="Questions answered by a verified example's SQL with the question's values, "
            "without a model call.",
        ),
        Panel(
            "SQL success rate, last 24 h",
            [(_ratio(sql_ok, sql_all, "project", "24h"), "{{project}}")],
            kind="stat",
            unit="percentunit",
            max=1,
        ),
    ]
    return dashboard(
        "querylift-accuracy",
        "querylift / Accuracy & feedback",
        "Per project: SQL that runs, SQL that fits the schema, what users say about answers and charts.",
        panels,
    )


def _quantiles(
    bucket: str, by: str, quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)
) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by ({by}, le) (rate({bucket}[{RI}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in quantiles
    ]


def latency() -> dict[str, Any]:
    panels = [
        Panel(
            "Stage latency p50",
            _quantiles("querylift_stage_duration_seconds_bucket", "stage", (0.5,)),
            unit="s",
        ),
        Panel(
            "Stage latency p95",
            _quantiles("querylift_stage_duration_seconds_bucket", "stage", (0.95,)),
            unit="s",
        ),
        Panel(
            "Stage latency p99",
            _quantiles("querylift_stage_duration_seconds_bucket", "stage", (0.99,)),
            unit="s",
        ),
        Panel(
            "Question to answer (end to end)",
            _quantiles(f"querylift_answer_latency_seconds_bucket{{{P}}}", "project", (0.5, 0.95)),
            unit="s",
        ),
        Panel(
            "Handler time per consumer p95",
            _quantiles("querylift_handler_duration_seconds_bucket", "consumer", (0.95,)),
            unit="s",
        ),
        Panel(
            "Language model call",
            _quantiles("querylift_llm_duration_seconds_bucket", "model", (0.5, 0.95)),
            unit="s",
        ),
        Panel(
            "Language model tokens per second",
            [
                (
                    f"sum by (direction, model) (rate(querylift_llm_tokens_total[{RI}]))",
                    "{{model}} {{direction}}",
                )
            ],
            unit="short",
        ),
        Panel(
            "Mean tokens per model call",
            [
                (
                    f"sum by (direction) (rate(querylift_llm_tokens_total[{RI}]))"
                    f" / ignoring(direction) group_left sum(rate(querylift_llm_duration_seconds_count[{RI}]))",
                    "{{direction}}",
                )
            ],
        ),
    ]
    return dashboard(
        "querylift-latency",
        "querylift / Latency",
        "Percentiles per pipeline stage, per consumer, end to end and per language-model call.",
        panels,
    )


def throughput() -> dict[str, Any]:
    panels = [
        Panel(
            "Events consumed",
            [
                (
                    f"sum by (consumer, topic) (rate(querylift_events_consumed_total[{RI}]))",
                    "{{consumer}} ← {{topic}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Events produced",
            [(f"sum by (topic) (rate(querylift_events_produced_total[{RI}]))", "{{topic}}")],
            unit="reqps",
        ),
        Panel(
            "Consumer lag",
            [("sum by (consumer) (querylift_consumer_lag)", "{{consumer}}")],
            description="Messages behind the end of the partitions each consumer group reads.",
        ),
        Panel(
            "Consumers running",
            [("sum by (consumer) (querylift_consumer_up)", "{{consumer}}")],
            kind="stat",
            max=1,
        ),
        Panel(
            "Failed events",
            [
                (
                    f"sum by (consumer, reason) (rate(querylift_events_failed_total[{RI}]))",
                    "{{consumer}}: {{reason}}",
                )
            ],
            unit="reqps",
            stacked=True,
        ),
        Panel(
            "Dead letters (per 5 min)",
            [
                (
                    "sum by (consumer, reason) (increase(querylift_dead_letters_total[5m]))",
                    "{{consumer}}: {{reason}}",
                )
            ],
            bars=True,
        ),
        Panel(
            "Redeliveries skipped (idempotency)",
            [(f"sum by (consumer) (rate(querylift_events_duplicate_total[{RI}]))", "{{consumer}}")],
            unit="reqps",
        ),
        Panel(
            "Answers published",
            [(f"sum by (project) (rate(querylift_answers_total{{{P}}}[{RI}]))", "{{project}}")],
            unit="reqps",
            stacked=True,
        ),
        Panel(
            "Examples retrieved per prompt (mean)",
            [
                (
                    f"sum by (source) (rate(querylift_retrieval_examples_sum[{RI}]))"
                    f" / sum by (source) (rate(querylift_retrieval_examples_count[{RI}]))",
                    "{{source}}",
                )
            ],
        ),
        Panel(
            "Best retrieval score",
            _quantiles("querylift_retrieval_top_score_bucket", "source", (0.5, 0.1)),
            max=1,
            description="Median and 10th percentile of the top example's similarity: low means few similar examples.",
        ),
    ]
    return dashboard(
        "querylift-throughput",
        "querylift / Throughput & lag",
        "Events in and out of each consumer, lag, failures, dead letters and retrieval hits.",
        panels,
    )


def training() -> dict[str, Any]:
    panels = [
        Panel(
            "Training jobs by state (per hour)",
            [("sum by (state) (increase(querylift_training_jobs_total[1h]))", "{{state}}")],
            bars=True,
            stacked=True,
        ),
        Panel("Training jobs running", [("sum(querylift_training_jobs_running)", "running")], kind="stat"),
        Panel(
            "Training duration",
            [
                (
                    f"histogram_quantile({q}, sum by (state, le) (rate(querylift_training_duration_seconds_bucket[6h])))",
                    f"p{round(q * 100)} {{{{state}}}}",
                )
                for q in (0.5, 0.95)
            ],
            unit="s",
        ),
        Panel(
            "Active model version per project",
            [(f'max by (project) (querylift_model_version{{status="active",{P}}})', "{{project}}")],
            description="Adapter version serving each project; 0 is the base model.",
        ),
        Panel(
            "Canary model version per project",
            [(f'max by (project) (querylift_model_version{{status="canary",{P}}})', "{{project}}")],
        ),
        Panel(
            "Candidate (canary) share of answers",
            [
                (
                    _ratio(
                        f'querylift_answers_total{{arm="candidate",{P}}}',
                        f"querylift_answers_total{{{P}}}",
                        "project",
                    ),
                    "{{project}}",
                )
            ],
            unit="percentunit",
            max=1,
        ),
    ]
    return dashboard(
        "querylift-training",
        "querylift / Training & models",
        "LoRA training jobs and the model version each project is served with.",
        panels,
    )


DASHBOARDS = {
    "querylift-accuracy.json": accuracy,
    "querylift-latency.json": latency,
    "querylift-throughput.json": throughput,
    "querylift-training.json": training,
}


def render() -> dict[str, str]:
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()
    }


def main(out: Path = OUT) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for name, content in render().items():
        (out / name).write_text(content, encoding="utf-8")
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
