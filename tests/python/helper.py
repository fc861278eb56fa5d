"""The `helper` module rqdb's tests import but its source distribution lacks.

Its job is to make the package under test importable: the tests run from the
unpacked sdist, whose code lives in `src/rqdb`, so that directory's parent
goes first on `sys.path`. RQDB_SRC names it; without it, `../src` relative to
the working directory (the sdist root's `tests`) is used.
"""

import os
import sys

_src = os.environ.get("RQDB_SRC") or os.path.join(os.getcwd(), "src")
if not os.path.isdir(os.path.join(_src, "rqdb")):
    raise ImportError(
        f"rqdb sources not found in {_src!r}: set RQDB_SRC to the unpacked sdist's src directory"
    )
sys.path.insert(0, _src)
