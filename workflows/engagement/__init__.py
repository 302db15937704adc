"""One engagement's life, from the PM system's webhook until the work is done.

The workflow is one class (``workflow.EngagementWorkflow``) built from parts, each in its own
module: ``base`` (state and side-effect plumbing) <- ``announcements`` <- ``checkpoints`` <-
``dispatching`` <- ``pm_changes`` <- ``workflow`` (messages, the main loop).
"""

from workflows.engagement.workflow import EngagementWorkflow

__all__ = ["EngagementWorkflow"]
