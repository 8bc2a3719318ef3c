"""Report figures: the Pareto front by hand, and the artists and labels each figure must carry."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from yolomlu.report.plots import layer_order, pareto_front, pareto_plot, per_class_plot, profile_plots


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        # (fps, map): (12, .30) is beaten by (15, .45); equal points are both on the front.
        ([(10, 0.50), (20, 0.40), (15, 0.45), (12, 0.30), (20, 0.40)], [True, True, True, False, True]),
        # Same fps, lower map: beaten. Same map, lower fps: beaten.
        ([(10, 0.5), (10, 0.4), (8, 0.5)], [True, False, False]),
        # One point dominates everything.
        ([(1, 0.1), (2, 0.2), (3, 0.3)], [False, False, True]),
        # NaN never takes part (and never beats anyone).
        ([(math.nan, 0.9), (5, math.nan), (1, 0.1)], [False, False, True]),
        ([], []),
    ],
)
def test_pareto_front_by_hand(points, expected):
    fps = [p[0] for p in points]
    acc = [p[1] for p in points]
    assert pareto_front(fps, acc).tolist() == expected


def _table(rows):
    columns = ["variant", "status", "reused", "fps", "map50_95"]
    return pd.DataFrame(rows, columns=columns)


def test_pareto_plot_labels_every_finished_variant_and_draws_the_front():
    table = _table(
        [
            ("ref", "FINISHED", False, 10.0, 0.50),
            ("fast", "FINISHED", False, 20.0, 0.40),
            ("slow_bad", "FINISHED", False, 8.0, 0.30),
            ("fused", "FINISHED", True, 15.0, 0.45),
            ("random", "FINISHED", False, 30.0, math.nan),  # accuracy not measured: the strip
            ("broken", "FAILED", False, math.nan, math.nan),
        ]
    )
    fig = pareto_plot(table)
    main, strip = fig.axes
    assert main.get_ylabel() == "map50_95" and strip.get_xlabel().startswith("fps")
    labels = {t.get_text() for t in main.texts}
    assert labels == {"ref", "fast", "slow_bad", "fused†"}
    assert {t.get_text() for t in strip.texts} == {"random"}
    assert "broken" not in labels
    (front,) = [line for line in main.get_lines() if line.get_gid() == "pareto-front"]
    assert list(front.get_xdata()) == [10.0, 15.0, 20.0]  # the front, by fps
    assert list(front.get_ydata()) == [0.50, 0.45, 0.40]
    legend = [t.get_text() for t in main.get_legend().get_texts()]
    assert legend == ["variant", "Pareto front"]


def test_pareto_plot_without_unmeasured_runs_has_one_axes_and_a_readable_y_range():
    table = _table([("a", "FINISHED", False, 10.0, 0.5000), ("b", "FINISHED", False, 12.0, 0.4998)])
    fig = pareto_plot(table)
    (ax,) = fig.axes
    low, high = ax.get_ylim()
    assert high - low >= 0.02  # a 2e-4 difference does not fill the plot
    assert ax.get_xlabel().startswith("fps")


def test_pareto_plot_stacks_labels_of_points_at_the_same_spot():
    rows = [("ref", "FINISHED", False, 10.0, 0.5), ("ref", "FINISHED", True, 10.0, 0.5), ("b", "FINISHED", False, 5.0, 0.4)]
    table = _table(rows)
    (ax,) = pareto_plot(table).axes
    offsets = {t.get_text(): t.xyann for t in ax.texts}
    assert offsets["ref"][1] != offsets["ref†"][1]
    assert offsets["ref"][0] < 0 and offsets["b"][0] > 0  # right half: label to the left of its point


def test_pareto_plot_with_no_measured_accuracy_is_a_speed_strip():
    table = _table([("a", "FINISHED", False, 10.0, math.nan), ("b", "FINISHED", False, 20.0, math.nan)])
    (strip,) = pareto_plot(table).axes
    assert "no variant has a measured map50_95" in strip.get_title()
    assert {t.get_text() for t in strip.texts} == {"a", "b"}


def test_per_class_plot_groups_bars_by_class_with_one_colour_per_variant():
    a = pd.DataFrame(
        {"category_id": [1, 2], "name": ["circle", "square"], "ap50_95": [0.6, 0.5], "ap50": [0.9, 0.8], "n_gt": [3, 4]}
    )
    b = a.assign(ap50_95=[0.55, -1.0])  # -1: pycocotools' "no ground truth"
    fig = per_class_plot({"ref": a, "int8": b})
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["circle", "square"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ref", "int8"]
    widths = [p.get_width() for p in ax.patches]
    assert widths[:3] == [0.6, 0.5, 0.55] and math.isnan(widths[3])


def test_per_class_plot_without_tables_says_so():
    fig = per_class_plot({})
    assert "no per-class AP logged" in [t.get_text() for t in fig.axes[0].texts]


def _profile(rows):
    frame = pd.DataFrame(rows, columns=["layer_type", "count", "time_us"])
    return frame.assign(ratio=frame["time_us"] / frame["time_us"].sum())


def test_layer_order_puts_the_study_taxonomy_first_then_the_rest_by_time():
    profiles = {
        "a": _profile([("ADD", 3, 10.0), ("CONV", 5, 100.0), ("ZEBRA", 1, 1.0), ("OTHER", 2, 50.0)]),
        "b": _profile([("STRIDEDSLICE", 4, 5.0), ("CONV", 5, 90.0)]),
    }
    assert layer_order(profiles) == ["CONV", "STRIDEDSLICE", "ADD", "OTHER", "ZEBRA"]


def test_profile_plots_share_rows_and_colours_and_mark_absent_types():
    profiles = {
        "ref": _profile([("CONV", 60, 9000.0), ("STRIDEDSLICE", 4, 400.0), ("CONCAT", 14, 500.0)]),
        "focus_conv": _profile([("CONV", 60, 9000.0), ("CONCAT", 14, 500.0)]),
    }
    fig = profile_plots(profiles)
    ref, focus = fig.axes
    assert (ref.get_title(), focus.get_title()) == ("ref", "focus_conv")
    assert [t.get_text() for t in ref.get_yticklabels()] == ["CONV", "STRIDEDSLICE", "CONCAT"]
    assert ref.get_shared_y_axes().joined(ref, focus)
    assert not ref.get_shared_x_axes().joined(ref, focus)  # a slow variant must not flatten a fast one
    assert len(ref.patches) == 3 and len(focus.patches) == 2
    assert "absent" in " ".join(t.get_text() for t in focus.texts)
    assert "absent" not in " ".join(t.get_text() for t in ref.texts)
    # CONV has one colour everywhere, CONCAT another; rows keep their place (CONCAT stays at y=2).
    colour = lambda ax, y: {round(p.get_y() + p.get_height() / 2): to_hex(p.get_facecolor()) for p in ax.patches}[y]  # noqa: E731
    assert colour(ref, 0) == colour(focus, 0) and colour(ref, 2) == colour(focus, 2) != colour(ref, 0)
    np.testing.assert_allclose(ref.patches[0].get_width(), 9.0)  # milliseconds
    assert " 60× 95%" in [t.get_text() for t in focus.texts]  # 9000 / 9500 us


def test_profile_plots_wrap_many_variants_and_hide_spare_axes():
    profiles = {f"v{i}": _profile([("CONV", 1, 10.0)]) for i in range(5)}
    fig = profile_plots(profiles)
    assert len(fig.axes) == 8 and sum(ax.axison for ax in fig.axes) == 5


def test_importing_and_drawing_leave_pyplot_and_the_backend_alone():
    code = (
        "import sys, matplotlib\n"
        "import yolomlu.report\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "matplotlib.use('svg')\n"
        "import pandas as pd\n"
        "from yolomlu.report import pareto_plot\n"
        "t = pd.DataFrame({'variant': ['a'], 'status': ['FINISHED'], 'reused': [False], 'fps': [1.0], 'map50_95': [0.5]})\n"
        "pareto_plot(t).savefig(sys.argv[1])\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        png = f"{tmp}/p.png"
        proc = subprocess.run([sys.executable, "-c", code, png], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_variants_that_tie_in_accuracy_get_labels_that_do_not_overlap():
    # The usual sweep: five variants with the baseline's mAP, their fps a few percent apart.
    rows = [(name, "FINISHED", False, fps, 0.7137) for name, fps in
            (("cpu_reference", 60.0), ("fused", 61.0), ("offline", 61.5), ("focus_to_conv", 62.0), ("batch16", 80.0))]
    fig = pareto_plot(_table(rows + [("half", "FINISHED", False, 61.2, 0.7104)]))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t, renderer) for t in fig.axes[0].texts]  # the text, not its leader line
    assert len(boxes) == 6
    overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]
    assert not overlaps
