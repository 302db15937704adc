"""Engagement dispatch: capacity-aware scheduling for accounting firms, on Temporal.

Shared constants live here so workflows, activities, the starter and the CLI agree on them.
"""

TASK_QUEUE = "dispatch"
"""The one task queue the worker polls for workflows and activities."""

ENGAGEMENT_ID_PREFIX = "engagement"
DISPATCHER_ID_PREFIX = "dispatcher"

__all__ = ["DISPATCHER_ID_PREFIX", "ENGAGEMENT_ID_PREFIX", "TASK_QUEUE"]
