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
