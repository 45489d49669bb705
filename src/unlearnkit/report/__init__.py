"""Human-readable reports of results JSON."""
from .markdown import fmt, headline_table, write_report

__all__ = ["fmt", "headline_table", "write_report"]
