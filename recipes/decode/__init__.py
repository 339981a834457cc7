"""Decoding image (and video) files to upright RGB pixels, the floor under the transforms.

``images`` (Pillow: the pixel cap, any mode to RGB, bad-file errors naming the file), ``jpeg`` (the one JPEG
header and EXIF-orientation reader), ``tensors`` (records to ``uint8`` tensors, the decode cache's raw records),
``crop`` (training crops decoded from the JPEG header's box), ``turbojpeg`` (the libturbojpeg 3 region-decode
binding), ``device`` (``gpu_decode``: JPEGs decoded with nvJPEG), ``video`` (video files frame by frame with PyAV,
and the annotated video of ``predict`` and the demo).
"""
