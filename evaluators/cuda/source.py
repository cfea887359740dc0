"""Reading and policing CUDA kernel source text on the trusted side, without compiling or running anything.

The launch shape is read from plain integer constants so that no candidate host code ever runs; the policy checks
are a first, friendly line of defence whose messages go back to the mutator (the compile flags the evaluator owns
are the real one: without ``-rdc`` a device-side launch cannot even compile).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_INCLUDES = frozenset({"cstdint", "stdint.h", "cuda_fp16.h", "cuda_bf16.h", "mma.h", "cuda_pipeline.h"})

# A directive starts with # or its digraph %:; include_next and import name headers too.
_INCLUDE_RE = re.compile(r"^[ \t]*(?:#|%:)[ \t]*(?:include\w*|import)\b[ \t]*(.*)$", re.MULTILINE)
_FORBIDDEN = (
    (re.compile(r"<<<"), "device-side kernel launches (<<<...>>>) are not allowed"),
    (re.compile(r"\bcuda[A-Z]\w*\s*\("), "CUDA runtime API calls are not allowed in kernel code"),
    (re.compile(r"\bcudaGraph|\bcudaStream"), "CUDA graphs and streams are not allowed in kernel code"),
    (re.compile(r"\b__has_include(?:_next)?\b"), "__has_include is not allowed (the allowed headers are known)"),
)
# What the host emulator cannot run. Inline assembly could even build for the host and mean something else there,
# so it is never emulated; the rest only names the likely reason when the emulator's build fails.
_NEVER_EMULATED = ((re.compile(r"\b(?:asm|__asm__|__asm)\b"), "inline PTX (asm)"),)
_NOT_EMULATED = (
    *_NEVER_EMULATED,
    (re.compile(r"\b(?:wmma|nvcuda)\s*::|\bmma\.sync|\bwgmma|<\s*mma\.h\s*>"), "tensor-core wmma/mma"),
    (re.compile(r"\b__pipeline_\w+|cp\.async|\bmemcpy_async\b|<\s*cuda_pipeline\.h\s*>"), "cp.async / pipelines"),
    (re.compile(r"\b(?:__half2?|__nv_bfloat162?|__float2half\w*|__half2float\w*|__bfloat16\w*)\b|"
                r"cuda_(?:fp16|bf16)\.h"), "half / bfloat16 types"),
    (re.compile(r"\bcooperative_groups\b|\bcg\s*::"), "cooperative groups"),
    (re.compile(r"\b(?:tex[123]D\w*|surf[123]D\w*|cudaTextureObject_t)\b"), "textures"),
    (re.compile(r"\b__syncthreads_(?:count|and|or)\b|\b__match_\w+_sync\b|\b__reduce_\w+_sync\b"),
     "block/warp reduction intrinsics"),
    (re.compile(r"\b__cvta_\w+|\b__isShared\b|\b__isGlobal\b"), "address-space intrinsics"),
    (re.compile(r"\b__cluster_dims__\b|\bcluster_\w+\s*\(|%cluster"), "thread block clusters"),
)
_EXTERN_SHARED_RE = re.compile(r"\bextern\s+__shared__\s+([^;{}()]*?(?:__align__\s*\(\s*\d+\s*\)[^;{}()]*?)?)"
                               r"\b([A-Za-z_]\w*)\s*\[\s*\]\s*;")
_ALIGN_RE = re.compile(r"__align__\s*\(\s*\d+\s*\)")


class SourceError(ValueError):
    """The source breaks the program format or the policy; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def strip_comments(code: str) -> str:
    """Blank out comments and the contents of string/char literals, keeping every newline and column."""
    out: list[str] = []
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith("//", i):
            j = code.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif code.startswith("/*", i):
            j = code.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in code[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and code[j] != c and code[j] != "\n":
                j += 2 if code[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + " " * max(0, j - i - 2) + (code[j - 1] if j - i >= 2 else ""))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _include_target(raw: str, original_line: str) -> str:
    """The header named by an include line; quoted names are blanked in stripped text, so read the original."""
    text = re.split(r"include\w*|import", original_line, maxsplit=1)[-1].strip()
    if text.startswith("<") and ">" in text:
        return text[1:text.index(">")].strip()
    return text or raw


def splice_lines(code: str) -> str:
    """Translation phase 2: a backslash at the end of a line joins it with the next."""
    return re.sub(r"\\[ \t]*\n", "", code)


def includes(code: str) -> list[str]:
    """Headers named by include directives (``"..."`` forms keep their quotes, so they never match the allowlist).

    A lint on the text, after line splicing: the evaluator also asks the preprocessor (``include_check``).
    """
    code = splice_lines(code)
    stripped = strip_comments(code)
    lines = code.split("\n")
    found = []
    for match in _INCLUDE_RE.finditer(stripped):
        line_no = stripped.count("\n", 0, match.start())
        found.append(_include_target(match.group(1).strip(), lines[line_no]))
    return found


def policy_violations(code: str, allowed_includes: frozenset[str] = DEFAULT_INCLUDES) -> list[str]:
    """Every rule the source breaks: forbidden includes, device-side launches, runtime API calls."""
    problems = []
    for header in includes(code):
        if header not in allowed_includes:
            allowed = ", ".join(f"<{h}>" for h in sorted(allowed_includes))
            problems.append(f"forbidden include {header!r} (allowed: {allowed})")
    stripped = strip_comments(code)
    for pattern, reason in _FORBIDDEN:
        match = pattern.search(stripped)
        if match:
            line = stripped.count("\n", 0, match.start()) + 1
            problems.append(f"line {line}: {reason}")
    return problems


def _features(code: str, table: tuple[tuple[re.Pattern[str], str], ...]) -> list[str]:
    stripped = strip_comments(splice_lines(code))
    found = []
    for header in includes(code):  # include lines are matched on their original text
        for pattern, reason in table:
            if pattern.search(f"<{header}>") and reason not in found:
                found.append(reason)
    for pattern, reason in table:
        if pattern.search(stripped) and reason not in found:
            found.append(reason)
    return found


def never_emulated(code: str) -> list[str]:
    """Features the CPU emulator never runs even if they build on the host (inline assembly)."""
    return _features(code, _NEVER_EMULATED)


def not_emulated(code: str) -> list[str]:
    """Features the CPU emulator lacks, found in the text: the likely reason when its build of a kernel fails."""
    return _features(code, _NOT_EMULATED)


@dataclass(frozen=True)
class LaunchShape:
    """How the evaluator launches the kernel: 1-D blocks of ``threads``; each block owns a block_m x block_n tile."""

    threads: int
    block_m: int
    block_n: int
    smem_bytes: int

    def grid(self, m: int, n: int) -> tuple[int, int, int]:
        """Blocks along N (x) and M (y) covering an m x n output."""
        return (-(-n // self.block_n), -(-m // self.block_m), 1)


LAUNCH_CONSTANTS = {"threads": "THREADS", "block_m": "BLOCK_M", "block_n": "BLOCK_N", "smem_bytes": "SMEM_BYTES"}


def read_constant(code: str, name: str) -> int:
    """The value of ``constexpr int NAME = <integer>;``, defined exactly once outside comments."""
    pattern = re.compile(
        rf"(?m)^[ \t]*(?:static[ \t]+)?constexpr[ \t]+(?:unsigned[ \t]+)?(?:int|long|size_t|unsigned)[ \t]+"
        rf"{name}[ \t]*=[ \t]*([^;]*);"
    )
    matches = pattern.findall(strip_comments(code))
    if not matches:
        raise SourceError([f"missing launch constant: write `constexpr int {name} = <integer>;` at file scope"])
    if len(matches) > 1:
        raise SourceError([f"launch constant {name} is defined {len(matches)} times; define it exactly once"])
    value = matches[0].strip()
    if not re.fullmatch(r"\d+[uUlL]*", value):
        raise SourceError([f"launch constant {name} must be a plain integer literal, got {value!r}"])
    return int(re.sub(r"[uUlL]+$", "", value))


def read_launch_shape(code: str, max_threads: int = 1024, max_smem_bytes: int = 227 * 1024,
                      max_block_edge: int = 4096) -> LaunchShape:
    """Read and validate the launch constants; ``SourceError`` lists every problem."""
    values: dict[str, int] = {}
    problems: list[str] = []
    for field_name, constant in LAUNCH_CONSTANTS.items():
        try:
            values[field_name] = read_constant(code, constant)
        except SourceError as exc:
            problems += exc.problems
    if problems:
        raise SourceError(problems)
    shape = LaunchShape(**values)
    if not 1 <= shape.threads <= max_threads:
        problems.append(f"THREADS={shape.threads} must be in 1..{max_threads}")
    for name, value in (("BLOCK_M", shape.block_m), ("BLOCK_N", shape.block_n)):
        if not 1 <= value <= max_block_edge:
            problems.append(f"{name}={value} must be in 1..{max_block_edge}")
    if shape.smem_bytes > max_smem_bytes:
        problems.append(f"SMEM_BYTES={shape.smem_bytes} exceeds the {max_smem_bytes} bytes of shared memory per block")
    if problems:
        raise SourceError(problems)
    return shape


def rewrite_for_emulation(code: str) -> str:
    """Turn ``extern __shared__ T name[];`` into a pointer to the emulator's dynamic shared memory (same lines)."""

    def replace(match: re.Match[str]) -> str:
        type_text = " ".join(_ALIGN_RE.sub(" ", match.group(1)).split())
        name = match.group(2)
        return f"{type_text}* {name} = reinterpret_cast<{type_text}*>(evolve_emu::dynamic_smem());"

    return _EXTERN_SHARED_RE.sub(replace, code)
