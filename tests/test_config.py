"""Config: strict, layered, documented, and a CLI that exits 2 naming the key."""
import subprocess
import sys

import pytest
import yaml

from fer_pipeline.config import DEFAULT_CONFIG, Config, ConfigError, all_keys, load_config


def test_pipeline_yaml_equals_schema_defaults():
    """pipeline.yaml documents every knob: it must hold every key, with the schema's default."""
    from_file = load_config()
    assert from_file.to_dict() == Config().to_dict()
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())

    def keys(d, prefix=""):
        for k, v in d.items():
            yield prefix + k
            if isinstance(v, dict):
                yield from keys(v, prefix + k + ".")

    assert set(keys(raw)) == set(all_keys())


def test_every_key_in_pipeline_yaml_is_commented():
    """Each leaf line or its group header carries a comment (the file is the documentation)."""
    lines = DEFAULT_CONFIG.read_text().splitlines()
    undocumented = []
    for i, ln in enumerate(lines):
        s = ln.strip()
        if not s or s.startswith("#") or ":" not in s:
            continue
        key, _, value = s.partition(":")
        if value.strip() == "" or "#" in value:
            continue  # a group header, or commented
        # a value line without its own comment must be covered by the comment of a nearby
        # line in the same block (e.g. model hyper-parameters listed under one explanation)
        window = lines[max(0, i - 4):i]
        if not any("#" in w for w in window):
            undocumented.append(key)
    assert not undocumented, f"undocumented keys in pipeline.yaml: {undocumented}"


def test_layers_and_overrides(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("stage2:\n  model:\n    layers: 6\n  train:\n    lr: 3e-4\n")
    cfg = load_config([extra], ["stage2.model.layers=2", "seed=7"])
    assert cfg.stage2.model.layers == 2          # override beats file
    assert cfg.stage2.train.lr == pytest.approx(3e-4)  # '3e-4' read as a float
    assert cfg.seed == 7
    assert cfg.stage2.model.d_model == 512       # untouched default
    demo = load_config(presets=["demo"])
    assert demo.stage1.model.pretrained == "bundled" and demo.stage2.model.d_model == 128


@pytest.mark.parametrize("override,needle", [
    ("stage2.model.layer=3", "unknown config key 'stage2.model.layer' (did you mean 'stage2.model.layers'?)"),
    ("stage2.modle.layers=3", "unknown config key 'stage2.modle' (did you mean 'stage2.model'?)"),
    ("seeed=1", "did you mean 'seed'?"),
    ("stage2.model.layers=abc", "'stage2.model.layers': Input should be a valid integer (got 'abc')"),
    ("stage2.model.layers=2.5", "'stage2.model.layers'"),
    ("stage2.model.pos=rope", "'stage2.model.pos'"),
    ("device=tpu", "'device'"),
    ("stage2.train.lr=-1", "'stage2.train.lr'"),
    ("seed.x=1", "'seed' is a value, not a group"),
    ("novalue", "must look like key.path=value"),
])
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage1:\n  embed:\n    batchsize: 8\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'stage1\.embed\.batchsize' "
                                          r"\(did you mean 'stage1\.embed\.batch_size'\?\)"):
        load_config([bad])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([tmp_path / "missing.yaml"])
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config([notmap])


def test_override_order_does_not_matter():
    """Cross-field checks run on the final result: shrinking n_videos below the default n_val
    is fine when n_val is lowered by a later override."""
    cfg = load_config(overrides=["synth.n_videos=4", "synth.n_val=2"])
    assert (cfg.synth.n_videos, cfg.synth.n_val) == (4, 2)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="divisible"):
        load_config(overrides=["stage2.model.d_model=100", "stage2.model.heads=3"])
    with pytest.raises(ConfigError, match="n_val"):
        load_config(overrides=["synth.n_videos=3", "synth.n_val=3"])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fer_pipeline", *args], capture_output=True, text=True)


def test_cli_config_show_and_exit_code_2():
    ok = _cli("config", "show", "stage2.model.layers=3")
    assert ok.returncode == 0
    assert yaml.safe_load(ok.stdout)["stage2"]["model"]["layers"] == 3
    bad = _cli("config", "show", "stage2.model.layrs=3")
    assert bad.returncode == 2
    err = bad.stderr.strip().splitlines()
    assert err == ["error: override stage2.model.layrs: unknown config key 'stage2.model.layrs' "
                   "(did you mean 'stage2.model.layers'?)"]
    typ = _cli("config", "show", "stage2.train.epochs=many")
    assert typ.returncode == 2 and "stage2.train.epochs" in typ.stderr


def test_overrides_are_taken_from_anywhere_after_the_subcommand():
    from fer_pipeline.cliutil import split_overrides

    rest, ov = split_overrides(["predict", "v.mp4", "--run", "R", "stage2.post.smooth_window=5",
                                "--out", "o", "seed=3"])
    assert rest == ["predict", "v.mp4", "--run", "R", "--out", "o"]
    assert ov == ["stage2.post.smooth_window=5", "seed=3"]
    # the value of an option stays with it, even with '=' in it; existing files are not overrides
    rest, ov = split_overrides(["report", "--config", "a=b.yaml", "RUN", "--max-videos", "1", "x.y=1"])
    assert rest == ["report", "--config", "a=b.yaml", "RUN", "--max-videos", "1"] and ov == ["x.y=1"]
    assert split_overrides(["stage0", "run", "--resume", "k=1"])[1] == ["k=1"]


def test_overrides_after_options_reach_the_command(tmp_path):
    from tests.conftest import make_store

    store = make_store(tmp_path / "store")
    r = subprocess.run([sys.executable, "-m", "fer_pipeline", "inspect", str(store), "--k", "3",
                        "log_level=WARNING", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert " INFO " not in r.stderr                      # the override took effect
    bad = subprocess.run([sys.executable, "-m", "fer_pipeline", "inspect", str(store), "--k", "3",
                          "stage9.x=1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown config key 'stage9'" in bad.stderr


def test_an_unknown_preset_is_one_error_listing_the_presets():
    from fer_pipeline.config import preset_names

    assert "demo" in preset_names()
    with pytest.raises(ConfigError, match=r"unknown preset 'demoo' \(presets: demo, vnaw-official, vnaw-paper\)"):
        load_config(presets=["demoo"])
    assert load_config(presets=["demo"]) != load_config()


def test_defaults_are_the_papers_v_naw_and_the_presets_load():
    """`config show` prints the paper's V-NAW form by default; the two V-NAW presets load
    through the CLI's --preset and set what their headers say they set."""
    r = subprocess.run([sys.executable, "-m", "fer_pipeline", "config", "show"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert shown["stage2"]["naw"]["form"] == "paper" and shown["stage2"]["data"]["select_ratio"] > 0
    official = load_config(presets=["vnaw-official"]).stage2
    assert (official.naw.form, official.model.pos, official.data.speed_jitter,
            official.data.class_balanced, official.train.epochs, official.train.batch_size) == \
        ("official", "none", 0.4, True, 50, 24) and official.needs_flip()
    paper = load_config(presets=["vnaw-paper"]).stage2
    assert (paper.naw.form, paper.aug.drop_min, paper.aug.drop_max, paper.aug.mask_ratio,
            paper.data.clip_len) == ("paper", 0.2, 0.4, 0.2, 100) and not paper.needs_flip()
    r = subprocess.run([sys.executable, "-m", "fer_pipeline", "config", "show", "--preset",
                        "vnaw-official"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["stage2"]["naw"]["form"] == "official"
