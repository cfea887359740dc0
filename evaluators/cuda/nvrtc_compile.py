"""Compile a CUDA source to a cubin with NVRTC through ctypes (used where nvcc is absent). Runs in the sandbox.

Usage: python -I nvrtc_compile.py --library LIBNVRTC --output OUT.cubin SOURCE.cu -- [NVRTC options...]
Prints NVRTC's log (with ptxas -v resource usage when requested) on stdout; exit status 0 on success, 1 when the
source does not compile, 2 when NVRTC itself cannot be used. Needs no GPU: a real architecture (-arch=sm_XX)
makes NVRTC run ptxas and return a cubin.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path


def _check(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        message = lib.nvrtcGetErrorString(status) or b"unknown error"
        print(f"nvrtc: {what} failed: {message.decode(errors='replace')}")
        sys.exit(2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("source")
    parser.add_argument("options", nargs="*")
    args = parser.parse_args()
    try:
        lib = ctypes.CDLL(args.library)
    except OSError as exc:
        print(f"nvrtc: cannot load {args.library}: {exc}")
        return 2
    source = Path(args.source).read_bytes()
    program = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(program), source, Path(args.source).name.encode(), 0, None, None),
           "nvrtcCreateProgram")
    options = [o.encode() for o in args.options]
    array = (ctypes.c_char_p * len(options))(*options)
    status = lib.nvrtcCompileProgram(program, len(options), array)
    size = ctypes.c_size_t()
    _check(lib, lib.nvrtcGetProgramLogSize(program, ctypes.byref(size)), "nvrtcGetProgramLogSize")
    log = ctypes.create_string_buffer(size.value)
    _check(lib, lib.nvrtcGetProgramLog(program, log), "nvrtcGetProgramLog")
    print(log.value.decode(errors="replace"))
    if status != 0:
        return 1
    _check(lib, lib.nvrtcGetCUBINSize(program, ctypes.byref(size)), "nvrtcGetCUBINSize")
    if size.value == 0:
        print("nvrtc: no cubin produced (pass a real architecture such as -arch=sm_90)")
        return 2
    cubin = ctypes.create_string_buffer(size.value)
    _check(lib, lib.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN")
    Path(args.output).write_bytes(cubin.raw)
    lib.nvrtcDestroyProgram(ctypes.byref(program))
    return 0


if __name__ == "__main__":
    sys.exit(main())
