"""Human-readable reports of results JSON."""
from .markdown import fmt, headline_table, write_report

__all__ = ["headline_table", "write_report"]
