"""``realtime archive``: annotate many video files on Ray (a local cluster by default),
with Parquet results, resume and fault tolerance.

- :mod:`~realtime.archive.inputs`: INPUT arguments -> video files, keys, fingerprints;
- :mod:`~realtime.archive.worker`: one file inside a Ray worker (the annotate path);
- :mod:`~realtime.archive.results`: the results folder, run.json and the manifest;
- :mod:`~realtime.archive.scheduler`: the driver's loop (backpressure, retries, time-outs);
- :mod:`~realtime.archive.cluster`: Ray: a local cluster on 127.0.0.1, or one joined; its stop;
- :mod:`~realtime.archive.driver`: planning (resume), :func:`archive`.

Nothing here imports Ray at import time. In Python::

    from realtime.archive import ArchiveSettings, archive
    report = archive(["videos/"], ArchiveSettings(out="results"))
    import pandas; faces = pandas.read_parquet("results/faces")
"""

__all__ = ["ArchiveReport", "ArchiveSettings", "archive"]


def __getattr__(name: str):
    # lazily: `realtime --help` imports the command, not the pipeline behind it
    if name in __all__:
        from realtime.archive import driver

        return getattr(driver, name)
    raise AttributeError(name)
