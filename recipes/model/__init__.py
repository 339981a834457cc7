"""Building models: any AutoModelFor… (pretrained, from a config, on a backbone), its fine-tuning fixes (BatchNorm,
labels by name, learning-rate schedules, timm checkpoints, EMA) and the Trainer of every run."""
