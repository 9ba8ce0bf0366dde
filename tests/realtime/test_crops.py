import numpy as np
import pytest

from engines.meta import ModelMeta
from realtime.crops import Cropper
from realtime.faces import Faces


def faces(*boxes):
    return Faces(np.asarray(boxes, np.float32), np.ones(len(boxes), np.float32))


def test_square_centred_on_box_and_scaled():
    c = Cropper(ModelMeta(input_size=32), crop_scale=1.5)
    np.testing.assert_allclose(c.squares(np.array([[10, 20, 30, 60]], np.float32)), [[20, 40, 60]])


def test_crop_takes_the_right_pixels():
    # a frame whose red channel encodes x and green encodes y
    h, w = 200, 300
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 2] = np.arange(w)[None, :] % 256
    frame[..., 1] = np.arange(h)[:, None]
    c = Cropper(ModelMeta(input_size=40), crop_scale=1.0)
    rgb = c.cut(frame, faces([100, 50, 140, 90]))  # exactly 40x40: no resampling
    assert rgb.shape == (1, 40, 40, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0, 0] == 100 and rgb[0, 0, 0, 1] == 50  # RGB order: R = x, G = y
    assert rgb[0, 39, 39, 0] == 139 and rgb[0, 39, 39, 1] == 89


def test_face_at_the_edge_is_padded_not_dropped():
    frame = np.full((100, 100, 3), 200, np.uint8)
    frame[:, :50] = 10
    c = Cropper(ModelMeta(input_size=20), crop_scale=2.0)
    rgb = c.cut(frame, faces([-10, -10, 20, 20], [90, 90, 100, 100]))
    assert rgb.shape == (2, 20, 20, 3)
    # replicated border: the part outside the frame repeats the edge (dark left half)
    assert rgb[0, 0, 0, 0] == 10 and rgb[1, -1, -1, 0] == 200


def test_normalize_uses_meta_mean_std():
    meta = ModelMeta(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))  # 16: the smallest a meta takes
    c = Cropper(meta)
    x = c.normalize(np.full((3, 16, 16, 3), 255, np.uint8))
    assert x.shape == (3, 3, 16, 16) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[0, :, 0, 0], [2.0, 1.0, 0.5], rtol=1e-6)


def test_crop_whole_and_empty():
    c = Cropper(ModelMeta(input_size=16))
    assert c.crop_whole(np.zeros((50, 40, 3), np.uint8)).shape == (1, 3, 16, 16)
    assert c.crop(np.zeros((50, 40, 3), np.uint8), Faces.empty()).shape == (0, 3, 16, 16)


def test_bad_scale_is_refused():
    with pytest.raises(ValueError, match="crop scale"):
        Cropper(ModelMeta(), crop_scale=0.1)
