"""What a run leaves behind: the model card, checkpoints and their completeness, Hub pushes, example images and
the ONNX export."""
