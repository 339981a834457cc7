"""Object-detection data: Pascal VOC, COCO JSON, YOLO txt labels, image folder + ``metadata.jsonl`` and Hub datasets
in the Hugging Face convention, all turned into one in-memory schema.

The schema (:func:`detection_features`)::

    image     Image(decode=False)   {"path", "bytes"} record, decoded by the transforms
    image_id  int64
    width     int32                 size of the decoded (upright) image: the image wins over annotations
    height    int32
    objects   {bbox: [[x, y, w, h]] (COCO, absolute pixels), category: [ClassLabel], area: [float]}

Readers only parse files and report the ones they cannot use (missing image, path outside the data
root, unparsable annotation); :func:`check_split` then measures every image and checks every box
(clipped at the edge, zero-area or inverted dropped, unknown classes dropped), whatever the source. The YOLO
reader is the one that reads image headers itself: its boxes are fractions of the image size.

Modules: ``common`` (the schema and what the readers share), one reader per layout (``voc``, ``coco``, ``yolo`` with
``yolo_config``, ``imagefolder``), ``layout`` (which layout a folder has, and
:func:`~recipes.tasks.detection.formats.layout.read_detection_folder`).
"""
