"""Face crops for the classifier: :class:`engines.crops.Cropper`, the project's one crop
routine (it takes :class:`realtime.faces.Faces` or plain boxes)."""

from engines.crops import Cropper

__all__ = ["Cropper"]
