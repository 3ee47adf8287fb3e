import pytest

from distil.config import RunConfig, TrainConfig, build_run_config, load_config
from distil.errors import ConfigError
from distil.methods.kd import KDConfig
from distil.schema import apply_overrides, from_dict, parse_override
from helpers import tiny_run


def test_defaults_build_and_method_resolves_in_two_steps():
    cfg = build_run_config({"method": {"name": "kd", "temperature": 4}})
    assert isinstance(cfg, RunConfig)
    assert isinstance(cfg.method, KDConfig) and cfg.method.temperature == 4.0
    assert cfg.method_name == "kd"
    assert cfg.to_dict()["method"] == {
        "name": "kd",
        "temperature": 4.0,
        "alpha": 0.5,
        "divergence": "forward_kl",
        "beta": 0.5,
        "skew_alpha": 0.1,
    }


def test_unknown_key_names_the_field_and_suggests():
    with pytest.raises(ConfigError, match=r"train\.lrr.*Did you mean 'lr'"):
        build_run_config({"train": {"lrr": 1e-4}, "method": {"name": "kd"}})


def test_unknown_method_key_is_an_error():
    with pytest.raises(ConfigError, match=r"method\.temprature.*'temperature'"):
        build_run_config({"method": {"name": "kd", "temprature": 2}})


def test_unknown_method_suggests_closest():
    with pytest.raises(ConfigError, match="Did you mean 'kd'"):
        build_run_config({"method": {"name": "kdd"}})


def test_missing_method_name():
    with pytest.raises(ConfigError, match="method.name is required"):
        build_run_config({})


@pytest.mark.parametrize(
    ("node", "pattern"),
    [
        ({"batch_size": 0}, "train.batch_size must be >= 1"),
        ({"batch_size": "8"}, "train.batch_size must be of type int"),
        ({"precision": "fp8"}, "must be one of"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"cache_teacher": 1}, "must be of type bool"),
    ],
)
def test_train_values_are_validated(node, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_run_config({"train": node, "method": {"name": "kd"}})


def test_method_values_are_validated():
    with pytest.raises(ConfigError, match="method.alpha"):
        build_run_config({"method": {"name": "kd", "alpha": 2}})


def test_overrides_are_typed():
    assert parse_override("train.lr=3e-5") == (["train", "lr"], 3e-5)
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("data.train_subset=null") == (["data", "train_subset"], None)
    assert parse_override("models.student.layers=[1,4,6]") == (["models", "student", "layers"], [1, 4, 6])
    data = apply_overrides({"train": {"lr": 1.0}}, ["train.lr=2e-5", "method.name=kd"])
    assert data == {"train": {"lr": 2e-5}, "method": {"name": "kd"}}
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.lr")


def test_load_config_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method:\n  name: kd\ntrain:\n  lr: 1.0e-4\n")
    cfg = load_config(path, ["train.batch_size=16", "method.alpha=0.9"])
    assert cfg.train.lr == 1e-4 and cfg.train.batch_size == 16 and cfg.method.alpha == 0.9
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_student_config_checks():
    with pytest.raises(ConfigError, match="models.student.path is required"):
        build_run_config({"models": {"student": {"init": "pretrained"}}, "method": {"name": "kd"}})


def test_from_dict_rejects_non_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        from_dict(TrainConfig, [1, 2], "train")  # type: ignore[arg-type]


def test_switching_a_files_method_drops_only_the_settings_it_does_not_share(tmp_path):
    """custom/kd with method.name=lwd: kd's alpha is dropped (with a note), the shared temperature kept."""
    from distil.config import read_config

    _, notes = read_config("custom/kd", [])
    assert notes == []
    data, notes = read_config("custom/kd", ["method.name=lwd"])
    assert "alpha" not in data["method"] and data["method"]["temperature"] == 2.0
    assert notes[0] == "method.alpha from custom/kd does not apply to method 'lwd'; dropped."
    assert "train.cache_teacher from custom/kd was set for method 'kd'" in notes[1] and len(notes) == 2
    with pytest.warns(UserWarning) as seen:
        assert load_config("custom/kd", ["method.name=lwd"]).method_name == "lwd"
    assert [str(w.message) for w in seen] == notes
    # A key typed on the command line is never dropped: it is checked against the new method.
    with pytest.raises(ConfigError, match="Unknown config key 'method.alpha'"), pytest.warns(UserWarning):
        load_config("custom/kd", ["method.name=lwd", "method.alpha=0.3"])
    # TED's stages (the file's plan) go with TED; an explicit plan override stays and is checked.
    data, notes = read_config("custom/ted", ["method.name=kd"])
    assert "plan" not in data and any(n.startswith("plan 'ted'") for n in notes)
    with pytest.warns(UserWarning):
        assert load_config("custom/ted", ["method.name=kd"]).plan_name == "single"
    with pytest.raises(ConfigError, match="plan.name=ted runs method 'ted'"), pytest.warns(UserWarning):
        load_config("custom/ted", ["method.name=kd", "plan.name=ted"])


def test_each_distinct_run_config_is_checked_once(monkeypatch, tmp_path):
    """Built, checked by its plan and by training: the checks run once per distinct config."""
    import distil.training.checks as checks

    cfg = build_run_config(tiny_run(tmp_path, "kd").to_dict())
    calls = []
    real = checks._check
    monkeypatch.setattr(checks, "_check", lambda c: (calls.append(1), real(c)))
    checks.check_run(cfg)
    checks.check_run(cfg)
    assert calls == []  # it passed when it was built
    cfg.train.max_steps = 7  # another config now
    checks.check_run(cfg)
    checks.check_run(cfg)
    assert calls == [1]


def test_a_removed_key_says_what_replaced_it(tmp_path):
    raw = tiny_run(tmp_path, "kd").to_dict()
    raw["train"]["tensorboard"] = False
    with pytest.raises(ConfigError, match=r"train.report_to=\[\]"):
        build_run_config(raw)


def test_a_run_saved_before_a_key_existed_resumes_when_the_key_is_at_its_default(tmp_path):
    """A method key this version added (KD's divergence) is what the old run did at its default only."""
    import yaml

    from distil.training.resume import check_same_run

    cfg = build_run_config(tiny_run(tmp_path, "kd").to_dict())
    saved = cfg.to_dict()
    for key in ("divergence", "beta", "skew_alpha"):
        saved["method"].pop(key)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert check_same_run(tmp_path, cfg) == {}
    cfg.method.divergence = "reverse_kl"  # not what the old run did
    with pytest.raises(ConfigError, match="method.divergence: None -> 'reverse_kl'"):
        check_same_run(tmp_path, cfg)
