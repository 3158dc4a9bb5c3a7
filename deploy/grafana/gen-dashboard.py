#!/usr/bin/env python3
"""Writes deploy/grafana/metasync.json, the metasync dashboard, from the panels below.

    deploy/grafana/gen-dashboard.py          # rewrite metasync.json
    deploy/grafana/gen-dashboard.py --check  # exit 1 if it is out of date

Every query uses only families of docs/metrics.md. `$queue` selects processes by
`metasync_build_info{queue}` (each query is joined on `instance` with it); `$datasource` is any
Prometheus. deploy/local/check-observability.sh runs every query against a real Prometheus.
"""

import json
import pathlib
import sys

TARGET = pathlib.Path(__file__).resolve().parent / "metasync.json"
UID = "metasync-fleet"
RATE = "$__rate_interval"
# Keeps the processes of the chosen queue(s): build_info is 1 per process.
ON_QUEUE = '* on (instance) group_left () metasync_build_info{queue=~"$queue"}'


def q(expr):
    """`expr` (a selector with `{}` for the series) limited to the chosen queue."""
    return f"({expr} {ON_QUEUE})"


def fleet(name, by=""):
    """A fleet gauge: the leader's figure (others export 0)."""
    grouping = f" by ({by})" if by else ""
    return f"max{grouping} ({q(name)})"


def rate(name, by="", sel=""):
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({q(f'rate({name}{sel}[{RATE}])')})"


def quantiles(name):
    return [
        (f"histogram_quantile({p}, sum by (le) ({q(f'rate({name}_bucket[{RATE}])')}))", f"p{int(p * 100)}")
        for p in (0.5, 0.95, 0.99)
    ]


PANELS = [
    ("Backlog", "short", [
        (fleet("metasync_queue_ready_deliveries"), "ready"),
        (fleet("metasync_queue_delayed_deliveries"), "delayed"),
        (fleet("metasync_queue_claimed_deliveries"), "claimed"),
        (fleet('metasync_jobs{state="queued"}'), "queued jobs (PostgreSQL)"),
    ]),
    ("Backlog age", "s", [
        (fleet("metasync_job_oldest_age_seconds", "state"), "oldest {{state}}"),
        (fleet("metasync_job_running_longest_seconds"), "longest running"),
    ]),
    ("Enqueued vs finished", "ops", [
        (rate("metasync_jobs_enqueued_total", "trigger"), "enqueued {{trigger}}"),
        (rate("metasync_jobs_total", "outcome", '{outcome=~"succeeded|failed|cancelled"}'), "finished {{outcome}}"),
    ]),
    ("Failure ratio by class", "percentunit", [
        (rate("metasync_job_failures_total", "class") + " / ignoring (class) group_left () "
         + rate("metasync_jobs_total", "", '{outcome=~"succeeded|failed|retrying"}'), "{{class}}"),
    ]),
    ("Failures by reason", "ops", [
        (rate("metasync_job_failures_total", "class, reason"), "{{class}} {{reason}}"),
    ]),
    ("End to end (created to finished)", "s", quantiles("metasync_job_end_to_end_seconds")),
    ("Queue wait (ready to claimed)", "s", quantiles("metasync_job_queue_wait_seconds")),
    ("Retries", "ops", [
        (rate("metasync_jobs_total", "", '{outcome="retrying"}'), "attempts retried"),
        (rate("metasync_jobs_enqueued_total", "", '{trigger="retry"}'), "manual retries"),
        (rate("metasync_jobs_total", "", '{outcome="deferred"}'), "deferred"),
    ]),
    ("Takeovers and fenced writes", "ops", [
        (rate("metasync_job_takeovers_total"), "takeovers"),
        (rate("metasync_fenced_writes_total"), "fenced writes"),
        (rate("metasync_deliveries_reaped_total"), "deliveries reaped"),
        (rate("metasync_deliveries_repaired_total"), "deliveries repaired"),
    ]),
    ("Workers, in flight vs concurrency", "short", [
        (fleet("metasync_workers_live"), "live workers"),
        (f"sum ({q('metasync_worker_in_flight')})", "in flight"),
        (f"sum ({q('metasync_worker_concurrency')})", "concurrency"),
    ]),
    ("Resources by freshness", "short", [
        (fleet("metasync_resources", "freshness"), "{{freshness}}"),
        (fleet("metasync_schedules_overdue"), "overdue schedules"),
    ]),
    ("Schedule lag", "s", [
        (fleet("metasync_schedule_lag_max_seconds"), "worst schedule lag"),
    ]),
    ("Maintenance health", "short", [
        (f"max ({q('metasync_maintenance_leader')})", "leader present"),
        (rate("metasync_maintenance_errors_total", "duty"), "errors/s {{duty}}"),
    ]),
    ("Maintenance: time since last success", "s", [
        (f"time() - max by (duty) ({q('metasync_maintenance_last_success_timestamp_seconds')})", "{{duty}}"),
    ]),
    ("Redis and PostgreSQL errors", "ops", [
        (rate("metasync_queue_errors_total", "op"), "redis {{op}}"),
        (rate("metasync_catalog_db_errors_total", "site"), "postgres {{site}}"),
        (rate("metasync_delivery_push_failures_total"), "push failures"),
    ]),
    ("API requests by status", "reqps", [
        (rate("metasync_http_requests_total", "status"), "{{status}}"),
    ]),
    ("API latency p95 (long-polls excluded)", "s", [
        (f"histogram_quantile(0.95, sum by (le, route) ({q(f'rate(metasync_http_request_duration_seconds_bucket[{RATE}])')}))", "{{route}}"),
    ]),
]


def panel(i, title, unit, targets):
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
                "refId": chr(ord("A") + n),
            }
            for n, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard():
    return {
        "uid": UID,
        "title": "metasync",
        "tags": ["metasync"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                {
                    "name": "queue",
                    "label": "Queue",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "definition": "label_values(metasync_build_info, queue)",
                    "query": {"query": "label_values(metasync_build_info, queue)", "refId": "queue"},
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {},
                },
            ]
        },
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


def main(argv):
    text = json.dumps(dashboard(), indent=2) + "\n"
    if argv[1:] == ["--check"]:
        if not TARGET.exists() or TARGET.read_text() != text:
            print("deploy/grafana/metasync.json is out of date: run deploy/grafana/gen-dashboard.py")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
