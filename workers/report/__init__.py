"""The human-readable side of an edit's artifacts: ``report.md`` and PNG plots (frontier,
eigenspectra, kept mass), drawn with matplotlib's headless Agg backend from data the pipeline
already holds. ``write_report`` is the entry point; see ``workers.report.inputs`` for the data it takes.
"""

from workers.report.inputs import ReportInput, ReportPoint, Selection, Spectrum, TargetBox
from workers.report.write import REPORT_FILES, ReportOutput, write_report

__all__ = [
    "REPORT_FILES",
    "ReportInput",
    "ReportOutput",
    "ReportPoint",
    "Selection",
    "Spectrum",
    "TargetBox",
    "write_report",
]
