"""Human-readable reports of results JSON: a Markdown summary and a self-contained HTML page."""
from .load import ReportInputError, Run, load_run, load_runs
from .markdown import fmt, headline_table, write_report
from .page import render, write_html

__all__ = ["ReportInputError", "Run", "fmt", "headline_table", "load_run", "load_runs", "render", "write_html",
           "write_report"]
