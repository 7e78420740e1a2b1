"""Keeping the process's memory close to what it uses (glibc malloc only; elsewhere a no-op).

Checking a model compiles and runs many XLA programs in turn, each allocating and freeing
megabytes of buffers and compiler scratch. glibc keeps freed memory for reuse, and its
adaptive mmap threshold moves blocks of up to 32 MiB onto the heap, where fragmentation
keeps them resident: on ResNet50V2 that was over 100 MB of memory nothing used.
"""
import ctypes

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
LARGE_ALLOCATION = 256 * 1024


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_free_memory() -> None:
    """Hand memory that is already freed back to the OS."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def map_large_allocations(threshold: int = LARGE_ALLOCATION) -> bool:
    """Serve allocations of `threshold` bytes or more with their own mmap, so that freeing
    them returns the memory at once (and glibc stops raising the threshold). Process-wide:
    the command line calls it at start; a library user may call it too. True if it took."""
    libc = _libc()
    return bool(libc is not None and hasattr(libc, "mallopt") and libc.mallopt(_M_MMAP_THRESHOLD, threshold))
