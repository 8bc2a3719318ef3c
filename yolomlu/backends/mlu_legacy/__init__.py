"""Cambricon MLU270/MLU220 through the legacy torch_mlu SDK (torch 1.3), driven as a device worker.

Not run on MLU hardware yet: see ``runner``'s docstring. Importing this package imports no SDK.
"""

from yolomlu.backends.mlu_legacy.runner import MluLegacyRunner

__all__ = ["MluLegacyRunner"]
