"""Package discovery; everything else about the build is in pyproject.toml.

Every package under ``connector/`` is found, never listed by hand, so a new
subpackage cannot be left out of the wheel (``connector.bybit.v5`` once was).
The one package that lives elsewhere is ``connector.avro``: the Avro schemas
sit at the top of the repository (``avro/``) and ship inside the package
(``package-dir`` in pyproject.toml). ``[tool.setuptools.packages.find]`` only
finds packages inside the folders it searches, so it cannot add that one;
hence this file.
"""

from setuptools import find_namespace_packages, setup

setup(packages=[
    *find_namespace_packages(include=["connector", "connector.*"],
                             exclude=["*.__pycache__", "connector.avro"]),
    "connector.avro",
])
