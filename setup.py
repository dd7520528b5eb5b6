"""Packaging for brainrecon. Metadata comes from settings.ini (nbdev 2), dependencies from
requirements.txt, so each fact is written once."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
cfg = ConfigParser(delimiters=["="])
cfg.read(here / "settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]
requirements = [
    line.split("#")[0].strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    author=cfg["author"],
    author_email=cfg["author_email"],
    license="Apache-2.0",
    python_requires=f">={cfg['min_python']}",
    packages=setuptools.find_packages(include=["brainrecon", "brainrecon.*"]),
    include_package_data=True,
    package_data={"brainrecon": ["assets/*", "assets/*/*", "assets/voila/templates/*/*"]},
    install_requires=requirements,
    entry_points={
        "console_scripts": ["brainrecon=brainrecon.cli:main"],
        "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
