"""phase-fetch internals: verified, streaming, resumable, multi-source artifact download.

Pure decisions live in ``plan`` (ranges, Content-Range, splitting, rate guard) and ``sources``
(which URLs, in which order, which are banned); I/O in ``download``, ``cache``, ``fetcher``;
what a run did is a ``result.FetchResult``.
"""
