"""Model families behind one protocol (:class:`rtdmd.backbones.base.Backbone`)."""
