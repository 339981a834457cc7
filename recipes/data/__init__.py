"""Data shared by every task, the floor under the transforms: ``sources`` (Hub datasets, local paths, the image
check pass), ``splits`` (split names and choice, hold-outs), ``check_cache`` (every start-up pass over the data runs
once per version of the data), ``streaming`` (streamed training data, a package)."""
