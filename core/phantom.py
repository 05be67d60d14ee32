"""A seeded synthetic CT-like phantom: an abdomen-like volume with a ground-truth label map.

The phantom exists so the workbench has realistic data without shipping patient images. It is
built to exercise the two things segbench cares about:

* geometry: anisotropic voxels (0.8 x 0.8 x 2.5 mm by default) and a non-identity affine (the
  first voxel axis is flipped and the slice plane is rotated a few degrees), so a viewer that
  ignores the affine shows it wrongly;
* small structures: faint lesions a few millimetres across inside the large organ, with contrast
  close to the noise level, so a network's probabilities are soft there (where RankSEG-RMA and
  argmax disagree).

Labels: 0 background (air and body), 1 liver-like large organ, 2 kidney-like organs, 3 lesions.
Intensities are Hounsfield-unit-like int16: air -1000, fat about -100, soft tissue about 40,
liver about 90, enhanced kidneys about 160, bone about 700, lesions about 25 below the liver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.io.image import Image

__all__ = [
    "PHANTOM_CLASSES",
    "SCENE_CLASSES",
    "PhantomParams",
    "make_phantom",
    "make_texture_scene",
    "phantom_affine",
]

#: Class names of the phantom's label map, by label value.
PHANTOM_CLASSES: tuple[str, ...] = ("background", "liver", "kidney", "lesion")

#: Class names of :func:`make_texture_scene` label maps, by label value.
SCENE_CLASSES: tuple[str, ...] = ("background", "disc", "box")


@dataclass(frozen=True)
class PhantomParams:
    """Intensity and noise settings of the phantom (HU-like units).

    The defaults give a lesion contrast of about 1.4 noise standard deviations, faint enough that a
    small network is unsure at lesion borders, visible enough that it finds most lesions.
    """

    air_hu: float = -1000.0
    fat_hu: float = -100.0
    muscle_hu: float = 45.0
    liver_hu: float = 90.0
    kidney_hu: float = 160.0
    bone_hu: float = 700.0
    lesion_contrast_hu: float = -25.0
    noise_sd_hu: float = 18.0
    blur_mm: float = 0.9
    lesion_radius_mm: tuple[float, float] = (2.0, 5.0)
    n_lesions: tuple[int, int] = (3, 7)


def phantom_affine(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], rotation_deg: float
) -> np.ndarray:
    """Voxel-to-RAS+ affine of the phantom: axis i flipped (LAS-like), rotated about the z axis.

    Parameters
    ----------
    shape : tuple of int
        Volume shape (I, J, K); the volume centre is placed near the world origin.
    spacing : tuple of float
        Voxel size in mm along i, j, k.
    rotation_deg : float
        Rotation of the slice plane about the world z axis, in degrees.

    Returns
    -------
    numpy.ndarray
        4x4 float64 affine.
    """
    angle = np.deg2rad(rotation_deg)
    rotation = np.array(
        [
            [np.cos(angle), -np.sin(angle), 0.0],
            [np.sin(angle), np.cos(angle), 0.0],
            [0.0, 0.0, 1.0],
        ]
    )
    # Flip i so voxel i runs towards patient Left (x decreasing), like many scanner exports.
    linear = rotation @ np.diag([-spacing[0], spacing[1], spacing[2]])
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = linear
    # Put the volume centre at a slightly off-origin world point, as scanners do.
    affine[:3, 3] = np.array([3.5, -12.0, 40.0]) - linear @ centre
    return affine


def _ellipsoid(
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    centre: np.ndarray,
    radii: np.ndarray,
    angle: float,
) -> np.ndarray:
    """Boolean mask of an ellipsoid rotated by ``angle`` in the (i, j) plane (coordinates in mm)."""
    x = coords[0] - centre[0]
    y = coords[1] - centre[1]
    z = coords[2] - centre[2]
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    u = cos_a * x + sin_a * y
    v = -sin_a * x + cos_a * y
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (z / radii[2]) ** 2 <= 1.0


def make_phantom(
    seed: int,
    shape: tuple[int, int, int] = (160, 160, 48),
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5),
    params: PhantomParams | None = None,
) -> tuple[Image, np.ndarray]:
    """Generate one CT-like phantom volume and its label map.

    Anatomy is laid out relative to the field of view (so larger shapes give a larger body), and
    lesion sizes are in millimetres. The same seed, shape and spacing always give the same volume.

    Parameters
    ----------
    seed : int
        Seed of the random generator (organ placement, lesion count and placement, noise).
    shape : tuple of int
        Volume shape (I, J, K) in voxels; each at least 16.
    spacing : tuple of float
        Voxel size in mm along i, j, k; each positive.
    params : PhantomParams, optional
        Intensity and noise settings; defaults when omitted.

    Returns
    -------
    image : core.io.image.Image
        int16 HU-like array of ``shape`` with the phantom affine, modality "CT" and an abdomen
        window (center 40, width 400).
    label : numpy.ndarray
        uint8 array of ``shape``: 0 background, 1 liver, 2 kidney, 3 lesion.
    """
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"phantom shape must be three sizes of at least 16 voxels, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"phantom spacing must be three positive sizes in mm, got {spacing}")
    params = params or PhantomParams()
    rng = np.random.default_rng(seed)

    extent = np.asarray(shape, dtype=np.float64) * np.asarray(spacing)
    # Voxel-centre coordinates in mm relative to the volume centre, as broadcastable grids.
    coords = tuple(
        ((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s).reshape(
            [-1 if axis == a else 1 for a in range(3)]
        )
        for axis, (n, s) in enumerate(zip(shape, spacing, strict=True))
    )
    half = extent / 2.0

    # Body: an elliptic cylinder along k, slightly shifted and rotated per seed.
    body_centre = np.array([rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04), 0.0]) * extent
    body_radii = np.array(
        [half[0] * rng.uniform(0.78, 0.88), half[1] * rng.uniform(0.62, 0.72), 1e9]
    )
    body_angle = rng.uniform(-0.15, 0.15)
    body = _ellipsoid(coords, body_centre, body_radii, body_angle)
    fat_depth = rng.uniform(0.08, 0.14)
    inner = _ellipsoid(coords, body_centre, body_radii * (1.0 - fat_depth), body_angle)

    hu = np.full(shape, params.air_hu, dtype=np.float32)
    hu[body] = params.fat_hu
    hu[inner] = params.muscle_hu

    # Spine: a bone cylinder at the posterior edge of the inner body. Voxel axis j runs towards
    # world +y, which is Anterior in RAS+ (see phantom_affine), so posterior is low j.
    spine_centre = body_centre - np.array([0.0, 0.72 * body_radii[1] * (1 - fat_depth), 0.0])
    spine = _ellipsoid(coords, spine_centre, np.array([9.0, 8.0, 1e9]) * half[0] / 64.0, 0.0)
    hu[spine] = params.bone_hu

    label = np.zeros(shape, dtype=np.uint8)

    # Liver: a large ellipsoid on the low-i side (patient Right, as i runs towards Left), a little
    # anterior of the body centre, tapering along k.
    liver_centre = body_centre + np.array(
        [-0.32 * body_radii[0], 0.08 * body_radii[1], rng.uniform(-0.1, 0.1) * extent[2]]
    )
    liver_radii = np.array(
        [
            0.55 * body_radii[0] * rng.uniform(0.9, 1.1),
            0.62 * body_radii[1] * rng.uniform(0.9, 1.1),
            0.42 * extent[2] * rng.uniform(0.85, 1.05),
        ]
    )
    liver = _ellipsoid(coords, liver_centre, liver_radii, rng.uniform(-0.4, 0.4)) & inner
    hu[liver] = params.liver_hu
    label[liver] = 1

    # Kidneys: two smaller ellipsoids either side of the spine, just anterior of it (still in the
    # posterior half of the body, as retroperitoneal organs are).
    for side in (-1.0, 1.0):
        kidney_centre = spine_centre + np.array(
            [
                side * 0.55 * body_radii[0] * rng.uniform(0.9, 1.1),
                0.12 * body_radii[1],
                rng.uniform(-0.12, 0.12) * extent[2],
            ]
        )
        kidney_radii = np.array(
            [
                0.17 * body_radii[0] * rng.uniform(0.85, 1.15),
                0.22 * body_radii[1] * rng.uniform(0.85, 1.15),
                0.25 * extent[2] * rng.uniform(0.8, 1.1),
            ]
        )
        kidney = _ellipsoid(coords, kidney_centre, kidney_radii, side * rng.uniform(0.2, 0.6))
        kidney &= inner & ~liver
        hu[kidney] = params.kidney_hu
        label[kidney] = 2

    # Lesions: small faint spheres well inside the liver.
    liver_voxels = np.argwhere(ndimage.binary_erosion(liver, iterations=2))
    n_lesions = int(rng.integers(params.n_lesions[0], params.n_lesions[1] + 1))
    for _ in range(n_lesions if len(liver_voxels) else 0):
        centre_voxel = liver_voxels[rng.integers(len(liver_voxels))]
        centre_mm = np.array(
            [float(coords[a].ravel()[centre_voxel[a]]) for a in range(3)], dtype=np.float64
        )
        radius = rng.uniform(*params.lesion_radius_mm)
        radii = np.array([radius, radius * rng.uniform(0.8, 1.2), radius * rng.uniform(0.9, 1.4)])
        lesion = _ellipsoid(coords, centre_mm, radii, rng.uniform(0, np.pi)) & liver
        contrast = params.lesion_contrast_hu * rng.uniform(0.8, 1.2)
        hu[lesion] = params.liver_hu + contrast
        label[lesion] = 3

    # Partial-volume blur (Gaussian, in mm so thick slices blur less across k), then noise.
    sigma_voxels = [params.blur_mm / s for s in spacing]
    hu = ndimage.gaussian_filter(hu, sigma=sigma_voxels, output=np.float32)
    noise = rng.standard_normal(size=shape, dtype=np.float32)
    noise *= params.noise_sd_hu
    hu += noise
    del noise
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    affine = phantom_affine(shape, spacing, rotation_deg=float(rng.uniform(3.0, 8.0)))
    image = Image(array=hu, affine=affine, modality="CT", window=(40.0, 400.0))
    return image, label


def _texture_crop(name: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of a scikit-image texture photograph, as floats in [0, 1]."""
    from skimage import data  # lazy: only the natural-image scene needs the sample photographs

    photo = getattr(data, name)().astype(np.float32) / 255.0
    i0 = int(rng.integers(photo.shape[0] - size[0] + 1))
    j0 = int(rng.integers(photo.shape[1] - size[1] + 1))
    return photo[i0 : i0 + size[0], j0 : j0 + size[1]]


def make_texture_scene(seed: int, size: tuple[int, int] = (192, 192)) -> tuple[Image, np.ndarray]:
    """A natural-image phantom: coloured discs and boxes composited onto a real texture photo.

    The background is a tinted crop of one of the texture photographs scikit-image ships
    (brick, grass, gravel); objects are filled with a random colour shaded by another texture,
    anti-aliased at their borders, then the whole image gets mild noise. Object colours are
    random, so telling discs from boxes needs their shape, not their colour.

    Parameters
    ----------
    seed : int
        Seed of the random generator.
    size : tuple of int
        Image height and width in pixels (each at least 64 and at most 512).

    Returns
    -------
    image : core.io.image.Image
        uint8 RGB array of shape ``(H, W, 1, 3)``, ``is_natural=True``, unit spacing.
    label : numpy.ndarray
        uint8 array ``(H, W, 1)``: 0 background, 1 disc, 2 box (later objects cover earlier
        ones, and the label follows what is visible).
    """
    from skimage import draw

    height, width = (int(n) for n in size)
    if not (64 <= height <= 512 and 64 <= width <= 512):
        raise ValueError(f"scene size must be between 64 and 512 pixels, got {size}")
    rng = np.random.default_rng(seed)
    textures = ("brick", "grass", "gravel")
    background = _texture_crop(textures[rng.integers(3)], (height, width), rng)
    tint = rng.uniform(0.45, 1.0, size=3).astype(np.float32)
    rgb = background[..., None] * tint
    label = np.zeros((height, width), dtype=np.uint8)

    count = int(rng.integers(4, 9))
    for index in range(count):
        kind = 1 + index % 2 if index < 2 else int(rng.integers(1, 3))
        mask = np.zeros((height, width), dtype=bool)
        ci, cj = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        extent = rng.uniform(0.06, 0.16) * min(height, width)
        angle = rng.uniform(0, np.pi)
        if kind == 1:
            rows, cols = draw.ellipse(
                ci, cj, extent, extent * rng.uniform(0.7, 1.0), shape=mask.shape, rotation=angle
            )
        else:
            half_i, half_j = extent, extent * rng.uniform(0.6, 1.0)
            corners = np.array(
                [[-half_i, -half_j], [-half_i, half_j], [half_i, half_j], [half_i, -half_j]]
            )
            rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            corners = corners @ rotation.T + [ci, cj]
            rows, cols = draw.polygon(corners[:, 0], corners[:, 1], shape=mask.shape)
        mask[rows, cols] = True
        if not mask.any():
            continue
        colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        shading = 0.6 + 0.4 * _texture_crop(textures[rng.integers(3)], (height, width), rng)
        # Anti-aliased alpha: a soft edge like a photographed object, hard label inside.
        alpha = ndimage.gaussian_filter(mask.astype(np.float32), sigma=0.8)[..., None]
        rgb = rgb * (1.0 - alpha) + alpha * colour * shading[..., None]
        label[mask] = kind

    rgb += rng.normal(0.0, 0.02, size=rgb.shape).astype(np.float32)
    pixels = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    image = Image(
        array=pixels[:, :, None, :],
        affine=np.eye(4),
        is_natural=True,
    )
    return image, label[:, :, None]
