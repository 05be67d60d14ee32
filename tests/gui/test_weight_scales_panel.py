"""WeightScalesPanel: table and plots against the QuantResult they show."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import Qt

from core.models import calibration_inputs
from core.phantom import make_phantom
from core.quant import QuantConfig, quantize_model
from gui.widgets.weight_scales_panel import (
    KEPT_NEAREST_TEXT,
    PLOT_KEYS,
    TABLE_COLUMNS,
    WeightScalesPanel,
)
from tests.tiny_models import tiny_unet


@pytest.fixture(scope="module")
def results():
    """One tiny U-Net quantized four ways (a few seconds in all)."""
    model = tiny_unet()
    image, _ = make_phantom(1, shape=(32, 32, 16))
    calib = calibration_inputs(model, image, n=8)
    common = {"bits": 3, "iters": 25, "batch_size": 4, "device": "cpu"}
    return {
        "flex": quantize_model(model, calib, QuantConfig(method="flexround", **common)),
        "ada": quantize_model(model, calib, QuantConfig(method="adaround", **common)),
        "rtn": quantize_model(model, calib, QuantConfig(method="rtn", **common)),
        "rtn-channel": quantize_model(
            model, calib, QuantConfig(method="rtn", granularity="channel", **common)
        ),
    }


@pytest.fixture
def panel(qtbot):
    widget = WeightScalesPanel()
    qtbot.addWidget(widget)
    widget.resize(1200, 800)
    widget.show()
    yield widget
    widget.close()


def histogram_item(panel, key):
    items = panel.plot_widget(key).listDataItems()
    assert items, f"no data in plot {key}"
    return items[0]


def test_table_rows_match_the_layer_reports(panel, results):
    result = results["flex"]
    panel.add_variant("W3 FlexRound", result)
    table = panel.table
    assert table.rowCount() == len(result.layers)
    header = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert header == list(TABLE_COLUMNS)
    changed_col = TABLE_COLUMNS.index("% changed")
    moved_col = TABLE_COLUMNS.index("% moved ≥2 levels")
    for row, layer in enumerate(result.layers):
        assert table.item(row, 0).text() == layer.name
        assert int(table.item(row, 1).text()) == layer.bits
        # The tiny layers have fewer weights than the scatter sample's cap, so the sampled
        # changes cover every weight: the shares can be recounted from them.
        delta = layer.scatter_delta_q
        assert delta.size == int(np.prod(layer.weight_shape))
        assert float(table.item(row, changed_col).text()) == pytest.approx(
            100 * np.mean(delta != 0), abs=0.006
        )
        assert float(table.item(row, moved_col).text()) == pytest.approx(
            100 * np.mean(np.abs(delta) >= 2), abs=0.006
        )
        ratio = float(table.item(row, TABLE_COLUMNS.index("s1 learned / initial")).text())
        assert ratio == pytest.approx(layer.s1_learned[0] / layer.s1_init[0], rel=1e-3)
        for title, value in (
            ("Held-out loss before (nearest)", layer.loss_before),
            ("Held-out loss after", layer.loss_after),
            ("Layer error (nearest)", layer.layer_error_before),
            ("Layer error", layer.layer_error_after),
            ("Weight rel. error", layer.weight_rel_error),
            ("Weight rel. error (nearest)", layer.weight_rel_error_rtn),
        ):
            assert float(table.item(row, TABLE_COLUMNS.index(title)).text()) == pytest.approx(
                value, rel=1e-3
            )
    assert [table.item(r, 1).text() for r in range(table.rowCount())][1:-1] == ["3"] * (
        len(result.layers) - 2
    )
    assert any(layer.frac_changed > 0 for layer in result.layers)  # learning changed codes


def test_histograms_equal_numpy_histograms_of_the_report(panel, results):
    result = results["flex"]
    panel.add_variant("flex", result)
    layer = result.layers[1]
    panel.select("flex", layer.name)
    assert panel.current_layer() is layer
    assert all(panel.note(key) == "" for key in PLOT_KEYS)

    counts, edges = np.histogram(layer.divisor_log, bins=panel.HISTOGRAM_BINS)
    item = histogram_item(panel, "divisor")
    np.testing.assert_array_equal(item.xData, edges)
    np.testing.assert_array_equal(item.yData, counts)

    delta = layer.scatter_delta_q
    levels = np.arange(delta.min(), delta.max() + 1)
    item = histogram_item(panel, "delta")
    np.testing.assert_array_equal(item.yData, [(delta == v).sum() for v in levels])
    np.testing.assert_allclose((item.xData[:-1] + item.xData[1:]) / 2, levels)

    counts, edges = np.histogram(layer.weights, bins=panel.HISTOGRAM_BINS)
    weight_hist, grid_lines = panel.plot_widget("weights").listDataItems()
    np.testing.assert_array_equal(weight_hist.yData, counts)
    np.testing.assert_array_equal(weight_hist.xData, edges)
    np.testing.assert_allclose(np.unique(grid_lines.xData), np.sort(layer.grid_levels[0]))
    assert grid_lines.xData.size == 2 * 2**layer.bits

    scatter = [i for i in panel.plot_widget("scatter").items() if isinstance(i, pg.ScatterPlotItem)]
    x, y = scatter[0].getData()
    np.testing.assert_array_equal(x, layer.scatter_abs_w_over_s1)
    np.testing.assert_array_equal(y, layer.scatter_delta_q)
    np.testing.assert_array_equal(histogram_item(panel, "s3").yData, layer.s3)
    np.testing.assert_array_equal(histogram_item(panel, "s4").yData, layer.s4)


def test_switching_layers_updates_plots_and_table_selection(panel, results, qtbot):
    result = results["flex"]
    panel.add_variant("flex", result)
    first, second = result.layers[0], result.layers[2]
    assert panel.current_layer() is first  # a new variant shows its first layer
    panel.select("flex", second.name)
    np.testing.assert_array_equal(
        histogram_item(panel, "divisor").yData,
        np.histogram(second.divisor_log, bins=panel.HISTOGRAM_BINS)[0],
    )
    assert panel.layer_combo.currentText() == second.name
    assert panel.table.selectedItems()[0].text() == second.name
    # Picking a row in the table switches the layer too.
    with qtbot.waitSignal(panel.layer_selected) as blocker:
        panel.table.selectRow(0)
    assert blocker.args == ["flex", first.name]
    np.testing.assert_array_equal(histogram_item(panel, "s3").yData, first.s3)
    # And so does the layer combo box.
    panel.layer_combo.setCurrentText(result.layers[3].name)
    assert panel.current_layer() is result.layers[3]
    with pytest.raises(ValueError, match="no quantized layer 'missing'"):
        panel.select("flex", "missing")
    with pytest.raises(ValueError, match="unknown variant"):
        panel.select("other", first.name)


def test_round_to_nearest_shows_notes_instead_of_empty_axes(panel, results):
    panel.add_variant("flex", results["flex"])
    panel.add_variant("rtn", results["rtn"])
    assert panel.current_variant == "rtn"
    for key in ("divisor", "delta", "scatter", "s3", "s4"):
        assert panel.note(key), key
        assert not panel.plot_widget(key).listDataItems()
    assert "Round-to-nearest" in panel.note("divisor")
    assert panel.note("weights") == ""  # the weights and their grid are still shown
    changed_col = TABLE_COLUMNS.index("% changed")
    assert {panel.table.item(r, changed_col).text() for r in range(panel.table.rowCount())} == {
        "0.00"
    }
    # Switching back to the FlexRound variant brings the plots back.
    panel.variant_combo.setCurrentText("flex")
    assert panel.note("divisor") == "" and panel.plot_widget("divisor").listDataItems()


def test_adaround_has_rounding_changes_but_no_divisor(panel, results):
    panel.add_variant("ada", results["ada"])
    layer = results["ada"].layers[1]
    panel.select("ada", layer.name)
    assert "AdaRound" in panel.note("divisor") or "adaround" in panel.note("divisor")
    assert panel.note("s3") and panel.note("s4")
    assert panel.note("delta") == "" and panel.note("scatter") == ""
    assert histogram_item(panel, "delta").yData.sum() == layer.scatter_delta_q.size


def test_per_channel_grid_follows_the_channel_picker(panel, results):
    result = results["rtn-channel"]
    panel.add_variant("channel", result)
    layer = result.layers[1]
    panel.select("channel", layer.name)
    assert panel.channel_spin.isEnabled()
    assert panel.channel_spin.maximum() == layer.grid_levels.shape[0] - 1
    for channel in (0, 2):
        panel.channel_spin.setValue(channel)
        grid_lines = panel.plot_widget("weights").listDataItems()[1]
        np.testing.assert_allclose(np.unique(grid_lines.xData), np.sort(layer.grid_levels[channel]))
    assert not np.allclose(layer.grid_levels[0], layer.grid_levels[2])


def test_empty_panel_and_removing_variants(panel, results):
    assert panel.note("divisor") and panel.table.rowCount() == 0
    panel.add_variant("rtn", results["rtn"])
    assert panel.variant_names() == ["rtn"]
    panel.remove_variant("rtn")
    assert panel.variant_names() == [] and panel.table.rowCount() == 0
    assert "No quantized variant" in panel.note("weights")


def test_layers_that_kept_their_round_to_nearest_start_are_marked(panel, results):
    result = results["flex"]
    panel.add_variant("flex", result)
    table = panel.table
    result_col = TABLE_COLUMNS.index("Result")
    for row, layer in enumerate(result.layers):
        text = table.item(row, result_col).text()
        assert text == (KEPT_NEAREST_TEXT if layer.kept_nearest else "learned")
        marked = table.item(row, 0).background().style() != Qt.BrushStyle.NoBrush
        assert marked == layer.kept_nearest
        assert table.item(row, 0).toolTip() == layer.kept_reason
        panel.select("flex", layer.name)
        assert ("Round-to-nearest start kept" in panel.summary_label.text()) == layer.kept_nearest
    # a round-to-nearest variant is not "marked": nearest is what the method does
    panel.add_variant("rtn", results["rtn"])
    assert {table.item(r, result_col).text() for r in range(table.rowCount())} == {
        "nearest (method)"
    }
    assert all(
        table.item(r, 0).background().style() == Qt.BrushStyle.NoBrush
        for r in range(table.rowCount())
    )
