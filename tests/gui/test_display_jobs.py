"""The worker-side jobs of the workbench: what they hand the views and the session."""

import numpy as np

from core.demo import demo_paths
from core.io import Image
from core.models import load_model
from core.phantom import make_phantom
from gui.display_jobs import cpu_batch_size, segment_for_display, with_default_window


def test_segment_for_display_keeps_one_compact_mask_and_float16_probabilities():
    model = load_model(demo_paths().model)
    image, label = make_phantom(0, (48, 40, 16))
    image.array = np.asfortranarray(image.array)  # as nibabel returns NIfTI voxels
    out = segment_for_display(model, image, decision="argmax", ground_truth=label, device="cpu")
    assert out.result.mask is out.labels.array and out.result.probs is None
    assert out.labels.array.dtype == np.uint8 and out.labels.array.flags.f_contiguous
    assert out.labels.max_label == int(out.labels.array.max())
    assert out.probs.dtype == np.float16 and out.probs.shape == (4, 48, 40, 16)
    # The cached probabilities decide like fresh ones.
    again = segment_for_display(model, image, decision="argmax", probs=out.probs, device="cpu")
    np.testing.assert_array_equal(again.labels.array, out.labels.array)
    assert "inference" not in again.result.timings


def test_cpu_batch_size_shrinks_only_for_large_slices():
    model = load_model(demo_paths().model)

    def image(rows, cols):
        return Image(array=np.zeros((rows, cols, 2), np.int16), affine=np.eye(4))

    assert cpu_batch_size(model, image(512, 512), "cpu") == 2
    assert cpu_batch_size(model, image(1024, 1024), "cpu") == 1
    assert cpu_batch_size(model, image(160, 160), "cpu") is None  # predict's default


def test_with_default_window_prefers_the_stored_window():
    image, _ = make_phantom(0, (32, 32, 16))
    assert with_default_window(image).window == image.window


def test_with_default_window_brings_the_images_presets_that_both_viewers_then_use(qtbot):
    # The presets' percentile pass runs on the worker with the window; the views take them as
    # given (on a 512x512x300 CT it held the GUI thread ~30 ms per viewer).
    from core.display import WINDOW_PRESETS, image_presets
    from gui.widgets.compare_viewer import CompareViewer
    from gui.widgets.ortho_viewer import OrthoViewer

    ct, _ = make_phantom(0, (32, 32, 16))
    assert with_default_window(ct).presets == WINDOW_PRESETS
    mr = Image(np.linspace(0, 900, 32 * 32 * 16).reshape(32, 32, 16), np.eye(4), modality="MR")
    opened = with_default_window(mr)
    assert opened.presets == image_presets(mr.array, modality="MR")
    assert opened.presets != WINDOW_PRESETS
    marker = opened.presets[:1]  # a tuple no viewer would compute for this image by itself
    viewer, compare = OrthoViewer(), CompareViewer()
    qtbot.addWidget(viewer)
    qtbot.addWidget(compare)
    viewer.set_image(mr, window=opened.window, presets=marker)
    compare.set_image(mr, window=opened.window, presets=marker)
    compare.show()
    assert viewer.presets == marker
    assert all(v.presets == marker for v in compare.viewers)


def test_session_keeps_a_vector_scaled_models_own_argmax_for_the_next_guarded_decision(qtbot):
    from core.models import LoadedModel
    from core.pipeline import segment_image
    from core.probability_calibration import DecisionGuard, ProbabilityCalibration
    from gui.session import Session
    from tests.tiny_models import tiny_unet

    base = tiny_unet()
    calibration = ProbabilityCalibration(
        class_scales=(1.0, 1.0),
        class_biases=(0.0, -2.0),
        guard=DecisionGuard(rules=("rma", "argmax"), pruning=(0.5, 0.5)),
    )
    model = LoadedModel(base.module, base.spec.with_changes(calibration=calibration.to_dict()))
    image, _ = make_phantom(5, shape=(24, 24, 16))
    session = Session()
    session.set_image(image)
    assert session.cached_model_decision("m") is None
    first = segment_for_display(model, image, decision="argmax", device="cpu")
    session.add_result("m", first.result, first.labels, first.probs)
    own = session.cached_model_decision("m")
    assert own is not None and own.dtype == np.uint8
    assert session.memory().masks >= first.labels.nbytes + own.nbytes
    # The next rule decides from the kept outputs without running the network.
    again = segment_image(
        model,
        image,
        decision="guarded",
        device="cpu",
        probs=session.cached_probs("m"),
        model_decision=own,
    )
    assert "inference" not in again.timings
    np.testing.assert_array_equal(again.mask, own)
