__version__ = "0.1.0"

# The unlearning methods a run gets when none is named, by what the data offers as "never seen"
# (`unlearning.default_plan`; docs/methods-log.md, "The default, chosen by the data"): SimNPO
# calibrated against twins, and, where the data has a holdout split, Twin RMU calibrated against
# the holdout people. A home's `request process` has no holdout people: SimNPO. Here, not in
# methods/, so that the command line need not import pydantic to show them.
DEFAULT_METHOD = "simnpo"
HOLDOUT_METHOD = "twin_rmu"
