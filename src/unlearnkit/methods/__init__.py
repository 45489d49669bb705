"""Unlearning methods: one loss per module, all run by `unlearnkit.train.train`."""
from .registry import Method, get_method, list_methods, register

__all__ = ["Method", "get_method", "list_methods", "register"]
