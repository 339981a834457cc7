"""Streamed training data: a ``datasets.IterableDataset`` read while training.

Sources are a Hub dataset or local ``*.parquet`` / webdataset ``*.tar`` shards. The stream is shuffled through a
seeded buffer (reshuffled every pass with ``set_epoch``) and split across processes with
``datasets.distributed.split_dataset_by_node``; every process then builds its own loader (no ``accelerate``
re-sharding or batch dispatching), and all processes end a pass together as soon as one of them runs out, so
distributed training never waits on a process that has no batch. Bad records (undecodable images, bad labels,
boxes or masks the task's record check refuses) are skipped and counted as they come (a ``strict`` run stops at
the first one, naming it; a record the ``datasets`` reader cannot parse stops every run); what a check fixes in a
good record (e.g. clipped boxes) is counted too. A streamed run's evaluation splits are map-style
(:func:`recipes.data.streaming.splits.stream_splits`).
Each checkpoint stores, per process and loader worker, how many records of the current
pass were consumed, so a resumed run continues where it stopped (re-reading, not decoding, the records before
that point).

Modules: ``sources`` (where the stream comes from), ``splits`` (this process's part, the evaluation splits),
``examples`` (records checked and transformed as they are read), ``loader`` (the loader and its collectives),
``progress`` (what was consumed, saved in checkpoints).
"""
