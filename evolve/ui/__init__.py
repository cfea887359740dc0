"""``evolve ui``: a local web view of runs (``evolve.ui.app``), reading the archive through ``evolve.ui.data``.

Importing this package needs no web framework: ``data``, ``store``, ``pictures`` and ``svg`` work without the ``ui`` extra
(the CLI and the HTML report use them); only ``app`` needs Starlette, Jinja2 and uvicorn.
"""
