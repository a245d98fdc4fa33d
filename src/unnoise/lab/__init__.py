"""The lab: watch the forward process, the schedule and reverse processes in the browser (`unnoise lab`)."""

from .app import GenerateRequest, LabConfig, create_app, run, serving

__all__ = ["GenerateRequest", "LabConfig", "create_app", "run", "serving"]
