import numpy as np
import pytest

from engines.meta import ModelMeta
from realtime.crops import Cropper
from train.augment import Augmenter, AugmentSettings
from train.trainer import AppInputs

from .conftest import face_image


@pytest.mark.parametrize("shape", [(200, 200), (90, 60), (50, 120)])
def test_no_augmentation_is_the_apps_whole_image_crop(shape):
    meta = ModelMeta(input_size=64)
    img = face_image(3, max(shape))[: shape[0], : shape[1]].copy()
    plain = Augmenter(meta.input_size, AugmentSettings.off())(img, np.random.default_rng(0))
    cropper = Cropper(meta)
    assert plain.shape == (64, 64, 3) and plain.dtype == np.uint8
    np.testing.assert_allclose(cropper.normalize(plain[None]), cropper.crop_whole(img), atol=0.02)
    np.testing.assert_allclose(AppInputs(img[None], meta), cropper.crop_whole(img))
    assert AppInputs(img[None], meta)[1:].shape == (0, 3, 64, 64)


def test_flip_mirrors_and_jitter_is_seeded():
    img = face_image(5, 80)
    flip_only = Augmenter(80, AugmentSettings(**{**AugmentSettings.off().__dict__, "flip": 1.0}))
    out = flip_only(img, np.random.default_rng(0))
    np.testing.assert_allclose(out.astype(int), img[:, ::-1, ::-1].astype(int), atol=1)
    aug = Augmenter(48)
    a, b, c = (aug(img, np.random.default_rng(s)) for s in (1, 1, 2))
    assert (a == b).all() and not (a == c).all()
