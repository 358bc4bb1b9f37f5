"""Training: the two stage loops (:mod:`distill`, :mod:`align`) and the small pieces they compose."""
