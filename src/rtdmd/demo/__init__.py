"""``rtdmd demo``: both stages on an embedded world, then a report (``report.html``, PNG figures,
``metrics.json``). Each world with a demo has a module here with ``demo(out, config_name, overrides, quick) ->
summary``; :data:`DEMOS` maps the world's kind to it (imported only when used: matplotlib is not light)."""

import importlib

DEMOS = {"shapes": "rtdmd.demo.shapes", "gmm": "rtdmd.demo.gmm"}


def demo_for(kind: str):
    """The demo function of a world kind (KeyError for a kind without one)."""
    return importlib.import_module(DEMOS[kind]).demo
