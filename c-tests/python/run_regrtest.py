"""run_regrtest.py - runs CPython's regression test driver (python -m test) from a script, so that
the embedding harness (c-tests/python/embed, which runs a script file rather than -m) can run
CPython's own test suite with poolmalloc installed through PyMem_SetAllocator.

usage: embed run_regrtest.py [regrtest arguments...]   (same arguments as python -m test)

Subprocesses the tests start run the plain interpreter of the same installation.
"""
import os
import sys

# Under the harness sys.executable is the script (the harness sets no program name); tests that
# start "sys.executable -c ..." need a real interpreter. Those child processes run the plain
# interpreter, not the harness: only this process has poolmalloc installed via the allocator API.
_real = os.path.join(sys.exec_prefix, "bin", "python%d.%d" % sys.version_info[:2])
if os.path.basename(sys.executable) != os.path.basename(_real) and os.access(_real, os.X_OK):
    sys.executable = _real

from test.libregrtest.main import main  # noqa: E402

if __name__ == "__main__":
    main()
