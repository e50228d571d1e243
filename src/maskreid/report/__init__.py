"""Paper tables side by side with reproduced numbers; figures."""

from maskreid.report.tables import PAPER, build_report, load_cells  # noqa: F401
