"""Which packages the wheel holds: every package under mpinet_hub/, found by setuptools (a list written by hand
once left mpinet_hub.training out of the wheel), plus the two folders kept at the top level where people look
for them, installed as mpinet_hub.configs and mpinet_hub.weights_cards (pyproject.toml maps their folders), and
the console script's launcher, a module of its own (_mpinet_launcher.py says why).
Everything else about the build is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["mpinet_hub", "mpinet_hub.*"]), "mpinet_hub.configs",
                "mpinet_hub.weights_cards"],
      py_modules=["_mpinet_launcher"])
