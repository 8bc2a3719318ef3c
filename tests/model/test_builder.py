import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import yolomlu.model as ym
from yolomlu.model import (
    ARCHS,
    REGISTRY,
    SIZES,
    Detect,
    build_yolov5,
    get_module,
    make_divisible,
    scale_depth,
)

FIXTURES = Path(__file__).parent / "fixtures"
CONF = Path(__file__).parents[2] / "conf" / "model"
PACKAGE = Path(ym.__file__).parent


@pytest.fixture(scope="module")
def n_v5():
    return build_yolov5("v5", *SIZES["n"])


def shapes(model):
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name, arch, size", [("yolov5s_v5", "v5", "s"), ("yolov5n_v6", "v6", "n")])
def test_state_dict_matches_official_checkpoint_layout(name, arch, size):
    fixture = json.loads((FIXTURES / f"official_keys_{name}.json").read_text())
    assert fixture["source"]
    assert shapes(build_yolov5(arch, *SIZES[size])) == fixture["keys"]  # same keys, shapes and order


def test_forward_shapes_strides_and_anchors(n_v5):
    with torch.no_grad():
        out = n_v5.eval()(torch.zeros(1, 3, 320, 320))
    assert [tuple(o.shape) for o in out] == [(1, 255, 40, 40), (1, 255, 20, 20), (1, 255, 10, 10)]
    assert all(o.dtype == torch.float32 for o in out)
    assert n_v5.stride.tolist() == [8.0, 16.0, 32.0]
    assert n_v5.detect.stride.tolist() == [8.0, 16.0, 32.0]
    spec = yaml.safe_load(ARCHS["v5"].read_text())
    px = torch.tensor(spec["anchors"], dtype=torch.float32).view(3, 3, 2)
    torch.testing.assert_close(n_v5.detect.anchors_px, px)
    assert n_v5.arch.anchors == tuple(tuple(float(v) for v in row) for row in spec["anchors"])


def test_model_attributes_and_layer_tags(n_v5):
    assert isinstance(n_v5.detect, Detect) and n_v5.detect is n_v5.model[-1]
    assert n_v5.nc == 80 and n_v5.names is None
    assert [layer.i for layer in n_v5.model] == list(range(25))
    assert n_v5.model[12].f == [-1, 6] and n_v5.model[24].f == [17, 20, 23] and n_v5.model[1].f == -1
    assert n_v5.save == (4, 6, 10, 14, 17, 20, 23)
    assert n_v5.arch == ym.ArchInfo("v5", 0.33, 0.25, 80, n_v5.arch.anchors)


def test_build_leaves_a_fresh_training_model():
    model = build_yolov5("v6", *SIZES["n"])
    assert model.training and all(m.training for m in model.modules())
    # the stride probe ran in eval mode: no BN has seen data
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(int(bn.num_batches_tracked) == 0 and not bn.running_mean.any() for bn in bns)


def test_names_setter_checks_length(n_v5):
    n_v5.names = [f"c{i}" for i in range(80)]
    assert n_v5.names[3] == "c3"
    with pytest.raises(ValueError, match="names has 2 entries but the model has nc=80"):
        n_v5.names = ["a", "b"]
    n_v5.names = None
    assert n_v5.names is None


def test_custom_nc_and_anchors():
    anchors = [[8, 8, 16, 16], [32, 32, 48, 48], [96, 96, 200, 200]]
    model = build_yolov5("v6", *SIZES["n"], nc=3, anchors=anchors)
    assert model.detect.na == 2 and model.detect.no == 8 and model.nc == 3
    out = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 16, 8, 8), (1, 16, 4, 4), (1, 16, 2, 2)]
    expected = torch.tensor(anchors, dtype=torch.float32).view(3, 2, 2)
    torch.testing.assert_close(model.detect.anchors_px, expected)


def test_arch_path_gives_the_same_model_as_its_name():
    a = build_yolov5("v6", *SIZES["n"])
    b = build_yolov5(str(ARCHS["v6"]), *SIZES["n"])
    assert shapes(a) == shapes(b) and b.arch.name == str(ARCHS["v6"])


def test_v5_and_v6_differ_where_the_releases_differ():
    v5, v6 = build_yolov5("v5", *SIZES["s"]), build_yolov5("v6", *SIZES["s"])
    assert type(v5.model[0]).__name__ == "Focus" and type(v6.model[0]).__name__ == "Conv"
    assert v6.model[0].conv.kernel_size == (6, 6) and v6.model[0].conv.padding == (2, 2)
    assert type(v5.model[8]).__name__ == "SPP" and type(v6.model[9]).__name__ == "SPPF"


def test_unknown_module_is_rejected_with_the_known_names():
    with pytest.raises(ValueError, match=r"unknown module 'C2f'.*known: \[.*'C3'.*'SPPF'"):
        get_module("C2f")
    spec = yaml.safe_load(ARCHS["v6"].read_text())
    spec["backbone"][2][2] = "C2f"
    with pytest.raises(ValueError, match="unknown module 'C2f'"):
        build_yolov5(spec, 1.0, 1.0)


def test_registry_names():
    yaml_names = {"Conv", "Focus", "C3", "Bottleneck", "SPP", "SPPF", "Concat", "nn.Upsample", "Detect"}
    assert yaml_names <= set(REGISTRY)


def test_unknown_arch_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown arch 'v7'.*\['v5', 'v6'\]"):
        build_yolov5("v7", 0.33, 0.5)


def test_arch_that_disagrees_with_the_builder_is_an_error():
    spec = yaml.safe_load(ARCHS["v6"].read_text())
    spec["depth_multiple"] = 0.33
    with pytest.raises(ValueError, match="depth_multiple=0.33 but the builder was asked for 1.0"):
        build_yolov5(spec, 1.0, 1.0)


def test_official_style_none_string_is_understood():
    # official yamls write `[None, 2, 'nearest']` and evaluate it; we map the bare word without eval
    spec = yaml.safe_load(ARCHS["v6"].read_text())
    spec["head"][1][3] = ["None", 2, "nearest"]
    model = build_yolov5(spec, *SIZES["n"])
    assert model.model[11].size is None and model.model[11].scale_factor == 2.0


@pytest.mark.parametrize(
    "x, expected", [(16.0, 16), (32 * 0.25, 8), (64 * 0.75, 48), (1024 * 1.25, 1280), (100 * 0.33, 40)]
)
def test_make_divisible(x, expected):
    assert make_divisible(x, 8) == expected


@pytest.mark.parametrize(
    "n, gd, expected",
    [(1, 0.33, 1), (3, 0.33, 1), (9, 0.33, 3), (6, 0.33, 2), (9, 0.67, 6), (3, 1.33, 4), (9, 1.33, 12)],
)
def test_scale_depth(n, gd, expected):
    assert scale_depth(n, gd) == expected


def test_no_eval_or_exec_in_the_package():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"(?<![.\w])(eval|exec)\(", text), path


def test_import_has_no_side_effects():
    probe = (
        "import io, contextlib, torch\n"
        "before = (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled(),\n"
        "          torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):\n"
        "    import yolomlu.model\n"
        "after = (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled(),\n"
        "         torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)\n"
        "assert before == after, (before, after)\n"
        "assert buf.getvalue() == '', buf.getvalue()\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "ok\n" and res.stderr == ""


def test_public_api_is_explicit():
    assert all(hasattr(ym, name) for name in ym.__all__)
    core = {"build_yolov5", "YOLOv5", "Detect", "fuse_conv_bn", "summarize", "format_summary", "SIZES"}
    assert core <= set(ym.__all__)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("arch, suffix", [("v6", ""), ("v5", "_v5")])
def test_model_config_files(size, arch, suffix):
    path = CONF / f"yolov5{size}{suffix}.yaml"
    text = path.read_text()
    assert text.startswith("# ") and not text.splitlines()[1].startswith("#")
    cfg = yaml.safe_load(text)
    assert cfg == {
        "defaults": ["model_schema", "_self_"],
        "name": path.stem,
        "arch": arch,
        "depth_multiple": SIZES[size][0],
        "width_multiple": SIZES[size][1],
        "nc": 80,
        "names": None,
        "weights": None,
        "img_size": 640,
    }
