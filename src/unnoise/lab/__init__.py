"""The lab: watch the forward process, the schedule and reverse processes in the browser (`unnoise lab`)."""

from .app import LabConfig, create_app, run, serving
from .messages import DialRequest, GenerateRequest, Img2ImgRequest, SpacingsRequest

__all__ = ["DialRequest", "GenerateRequest", "Img2ImgRequest", "LabConfig", "SpacingsRequest", "create_app", "run",
           "serving"]
