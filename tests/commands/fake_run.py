"""A stand-in for ``rtdmd.train.runs`` (the run loader): ``load_run("RUN")`` returns a given config and backbone."""

import sys
import types


def install(monkeypatch, config, backbone) -> None:
    runs = types.ModuleType("rtdmd.train.runs")

    def load_run(run_dir):
        assert run_dir == "RUN"
        return config, backbone

    runs.load_run = load_run
    monkeypatch.setitem(sys.modules, "rtdmd.train.runs", runs)
