"""Unlearning methods: one loss per module, all run by `unlearnkit.train.train`."""
from .registry import Context, Method, Params, get_method, list_methods, register

__all__ = ["Context", "Method", "Params", "get_method", "list_methods", "register"]
