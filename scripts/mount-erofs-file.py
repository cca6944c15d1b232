#!/usr/bin/env python3
"""Usage: mount-erofs-file.py IMAGE DIR

Mounts the EROFS image file IMAGE read-only at DIR with mount(2), the file
itself as the source: the kernel's file-backed mount (Linux 6.12+), where
util-linux 2.38 `mount -t erofs` would set up a loop device. The benchmarks
compare against this mount."""
import ctypes
import os
import sys

MS_RDONLY = 1

if len(sys.argv) != 3:
    sys.exit(__doc__)
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(sys.argv[1].encode(), sys.argv[2].encode(), b"erofs", MS_RDONLY, None) != 0:
    sys.exit("mount(2) %s: %s" % (sys.argv[1], os.strerror(ctypes.get_errno())))
