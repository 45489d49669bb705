"""Unlearning methods: one loss per module, all run by `unlearnkit.train.train`."""
from .. import DEFAULT_METHOD
from .registry import Context, Method, Params, get_method, list_methods, register

__all__ = ["DEFAULT_METHOD", "Context", "Method", "Params", "get_method", "list_methods", "register"]
