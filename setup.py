# SPDX-License-Identifier: MIT
# setup.py stays only because cffi_modules has no pyproject form (python-cffi/cffi#55).
from setuptools import setup

setup(cffi_modules=["native/build_icmp6.py:ffibuilder"])
