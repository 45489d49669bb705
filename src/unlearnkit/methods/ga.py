"""Gradient ascent (GA): maximise the forget set's negative log-likelihood.

    L = -NLL(forget) = mean_{t in answers} log p(a_t | q, a_<t)

Jang et al. 2023, "Knowledge Unlearning for Mitigating Privacy Risks in Language Models"; TOFU's
baseline (Maini et al. 2024). Unbounded below: the calibrated stop (or a short budget) ends it.
"""
from ..scoring import nll
from .registry import Params, register


class GAParams(Params):
    """Gradient ascent has no settings of its own (learning rate and budget are the loop's)."""


@register("ga", GAParams, "Gradient ascent on the forget set (unbounded: small lr, stopped early)",
          train=dict(lr=2e-4, steps=40, batch_size=16))
def loss(model, batch, ctx):
    forget_nll = nll(model, batch["forget"])
    return -forget_nll, {"forget_nll": forget_nll.detach()}, -forget_nll
