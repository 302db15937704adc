"""The burst benchmark's reading of the server's database requests (``--server-metrics``)."""

from __future__ import annotations

from collections import Counter

from benchmarks.server_metrics import parse, render

SCRAPE = """\
# HELP persistence_requests persistence_requests counter
# TYPE persistence_requests counter
persistence_requests{operation="UpdateWorkflowExecution",service_name="history"} 120
persistence_requests{operation="UpdateWorkflowExecution",service_name="frontend"} 3
persistence_requests{operation="GetNamespace",service_name="frontend"} 2.5e+01
persistence_requests_total_latency{operation="GetNamespace"} 99
task_requests{operation="TransferActiveTaskSignalExecution"} 7
"""


def test_requests_are_summed_by_operation_and_other_metrics_ignored() -> None:
    assert parse(SCRAPE) == Counter({"UpdateWorkflowExecution": 123, "GetNamespace": 25})


def test_the_printout_is_per_workflow_for_each_phase() -> None:
    lines = render(
        {
            "reference": (Counter({"UpdateWorkflowExecution": 50}), 10),
            "ours": (Counter({"UpdateWorkflowExecution": 80, "GetNamespace": 20}), 10),
        }
    )
    assert lines[1].split()[-3:] == ["all", "5.0", "10.0"]
    assert lines[2].split() == ["UpdateWorkflowExecution", "5.0", "8.0"]
    assert lines[3].split() == ["GetNamespace", "0.0", "2.0"]
