"""Export to SavedModels with tokenization inside, and the TF Serving check."""

from tfbert.errors import ExportError
from tfbert.export.check import CheckReport, check_saved_model
from tfbert.export.exporter import export_model, next_version

__all__ = ["CheckReport", "ExportError", "check_saved_model", "export_model", "next_version"]
