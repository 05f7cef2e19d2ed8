"""Framework adapters: `outlast.adapters.fastapi`, `.flask`, `.aws_lambda` (and more).

Each is a thin layer over the framework-neutral core in `outlast._adapter`; import the one for
your framework (its framework is an optional extra: `pip install 'outlast[fastapi]'`).
"""
