"""yolomlu: a workbench for porting YOLOv5 to accelerators."""

__version__ = "0.1.0"
