"""Build of the optional C counting loop; all other metadata lives in pyproject.toml.

optional=True: where no C compiler or Python headers exist the install still succeeds and
calibration counts with numpy (same results, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("qtool.calib._binning", ["qtool/calib/_binning.c"], optional=True)])
