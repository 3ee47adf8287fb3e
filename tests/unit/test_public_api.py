"""The documented public API: names on the package itself and ``distil.training.train``."""

import subprocess
import sys

import pytest

import distil


def test_every_public_name_resolves_to_its_module_definition():
    import importlib

    for name in distil.__all__:
        value = getattr(distil, name)
        if name != "__version__":
            assert value is getattr(importlib.import_module(distil._API[name]), name)
    assert set(distil.__all__) == {"__version__", *distil._API}
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        distil.trian  # noqa: B018


def test_train_from_the_training_package():
    from distil.training import RunResult, train
    from distil.training.loop import RunResult as loop_result
    from distil.training.loop import train as loop_train

    assert train is loop_train and RunResult is loop_result


def test_load_config_takes_bundled_names_and_files(tmp_path):
    cfg = distil.load_config("glue/sst2/kd", ["train.epochs=2"])
    assert cfg.train.epochs == 2 and cfg.method.name == "kd"
    with pytest.raises(distil.DistilError, match="neither a file nor a bundled config"):
        distil.load_config("glue/sst2/kdd")


def test_import_distil_stays_light():
    code = "import sys, distil; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
