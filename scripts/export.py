"""Export a fine-tuned model to ONNX, check parity with PyTorch on real images and time both.

    python scripts/export.py outputs/food101-vit --output outputs/food101-vit-onnx [--images photo.jpg ...]

Writes model.onnx, config.json, preprocessor_config.json and export_report.json (parity and throughput) to --output.
Needs the export extra: pip install -e ".[export]".
"""

import sys

from recipes.modes.export import main

if __name__ == "__main__":
    sys.exit(main())
