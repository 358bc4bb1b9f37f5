"""The application layer: what the commands and the demos do with trained runs (load them, sample, evaluate,
watch, export). It builds on :mod:`rtdmd.train` and the plug-in packages below it, never the other way round."""
