"""Per-layer sensitivity on a tiny real model: the table, its consistency, the pick, the chart."""

from __future__ import annotations

import copy
import io
import sys

import pytest
import torch
from matplotlib.figure import Figure

from yolomlu.quant import (
    QConfig,
    calibrate,
    most_sensitive,
    quantize_model,
    quantized_layers,
    sensitivity_figure,
    sensitivity_table,
    sqnr_db,
)
from yolomlu.quant.sensitivity import COLUMNS


@pytest.fixture(scope="module")
def table_and_models(tiny_model_base, images):
    float_model = copy.deepcopy(tiny_model_base)
    qconfig = QConfig(firstconv=False, mixed_layer=("detect",))
    batch = images[:1]
    quant = copy.deepcopy(float_model)
    quantize_model(quant, calibrate(float_model, [batch], qconfig), qconfig)
    return sensitivity_table(float_model, quant, batch), float_model, quant, batch


def test_table_has_one_row_per_quantized_layer(table_and_models) -> None:
    table, float_model, quant, _ = table_and_models
    assert tuple(table.columns) == COLUMNS
    assert list(table["name"]) == list(quantized_layers(quant)) and len(table) == 59  # the 3 head convs stay float
    values = table[list(COLUMNS[1:])].to_numpy()
    assert (values > 0).all() and (values < 200).all()
    # the float model is given back untouched
    assert not quantized_layers(float_model)


def test_cumulative_ends_at_the_fully_quantized_model_and_never_beats_the_first_layer_alone(table_and_models) -> None:
    table, float_model, quant, batch = table_and_models
    with torch.no_grad():
        ref = torch.cat([y.flatten() for y in float_model(batch)])
        out = torch.cat([y.flatten() for y in quant(batch)])
    assert table["cumulative_output_sqnr_db"].iloc[-1] == pytest.approx(sqnr_db(ref, out), abs=1e-9)
    assert table["cumulative_output_sqnr_db"].iloc[0] == table["solo_output_sqnr_db"].iloc[0]
    assert table["cumulative_output_sqnr_db"].iloc[-1] < table["solo_output_sqnr_db"].min()


def test_most_sensitive_picks_the_lowest_solo_sqnr(table_and_models) -> None:
    table = table_and_models[0]
    picked = most_sensitive(table, 3)
    worst = table.nsmallest(3, "solo_output_sqnr_db")["name"].tolist()
    assert picked == worst and most_sensitive(table, 0) == []
    with pytest.raises(ValueError, match=r"k=60 but the table has only 59 quantized layers"):
        most_sensitive(table, 60)
    with pytest.raises(ValueError, match=r"k=-1 must be a non-negative integer"):
        most_sensitive(table, -1)


def test_figure_is_a_matplotlib_figure_without_pyplot(table_and_models) -> None:
    table = table_and_models[0]
    figure = sensitivity_figure(table, highlight=most_sensitive(table, 2))
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    assert len(figure.axes[0].patches) == len(table)  # one bar per layer
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"
    assert "matplotlib.pyplot" not in sys.modules
