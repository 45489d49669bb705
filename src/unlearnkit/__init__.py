__version__ = "0.1.0"

# The unlearning method that `unlearn forget`, the demo and a home's `request process` run unless told
# otherwise (docs/methods.md, "Results"). Here, not in methods/, so that the command line need not
# import pydantic to show it.
DEFAULT_METHOD = "simnpo"
