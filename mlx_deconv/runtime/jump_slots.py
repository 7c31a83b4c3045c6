"""A loaded shared library's jump slots, read from its ELF file and rewritten in memory (Linux).

A library calls a function of another library through a jump slot: one
pointer in its global offset table that the dynamic loader fills with the
function's address (at load time when Python opens it with ``RTLD_NOW``).
:mod:`.blas` uses this module to point ``libmlx.so``'s ``cblas_sgemm`` slot
at an optimized BLAS after ``mlx.core`` has been imported.

The slots are found in the library's file: its dynamic section names the
relocation table of the procedure linkage table (``DT_JMPREL``), the symbol
table (``DT_SYMTAB``) and the string table (``DT_STRTAB``). The file is read,
not the mapped copy, because glibc rewrites some dynamic entries of the mapped
copy in place. The load base and the mapped program headers come from
``dl_iterate_phdr``; :func:`find_loaded` refuses a file whose program headers
differ from the mapped ones (a library replaced on disk since it was loaded).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

#: ELF constants (elf.h).
PT_LOAD, PT_DYNAMIC, PT_GNU_RELRO = 1, 2, 0x6474E552
DT_NULL, DT_PLTRELSZ, DT_STRTAB, DT_SYMTAB, DT_RELA, DT_STRSZ, DT_SYMENT = 0, 2, 5, 6, 7, 10, 11
DT_PLTREL, DT_BIND_NOW, DT_JMPREL, DT_FLAGS, DT_FLAGS_1 = 20, 24, 23, 30, 0x6FFFFFFB
DF_BIND_NOW, DF_1_NOW = 0x8, 0x1
EM_X86_64, EM_AARCH64 = 62, 183
#: The jump-slot relocation type of each machine this module knows: only these are read.
JUMP_SLOT_TYPE = {EM_X86_64: 7, EM_AARCH64: 1026}  # R_X86_64_JUMP_SLOT, R_AARCH64_JUMP_SLOT
PROT_READ, PROT_WRITE, PROT_EXEC = 0x1, 0x2, 0x4


class ElfError(ValueError):
    """The file is not an ELF library this module can read."""


@dataclass(frozen=True)
class LoadedObject:
    """A shared object mapped into this process.

    Args:
        path (str): its file, as the loader named it.
        base (int): its load base (``dlpi_addr``): add it to a virtual address in the file.
        phdrs (bytes): its program headers as mapped.
    """

    path: str
    base: int
    phdrs: bytes


@dataclass(frozen=True)
class JumpSlot:
    """One jump slot of a loaded library.

    Args:
        symbol (str): the function the slot serves.
        address (int): where the slot is in this process's memory.
        read_only (bool): True when the slot lies in the library's RELRO range
            (made read-only after relocation); :func:`write_slot` asks the
            mapping itself, this is for the record.
    """

    symbol: str
    address: int
    read_only: bool


@dataclass(frozen=True)
class ElfFacts:
    """What :func:`read_jump_slots` read from a library's file.

    Args:
        machine (int): ``e_machine``.
        bind_now (bool): the library asks for all its symbols bound at load time.
        needed (tuple): its ``DT_NEEDED`` library names.
        slots (dict): symbol name -> ``(r_offset, in RELRO)`` for the jump slots asked for and found.
        phdrs (bytes): its program headers.
    """

    machine: int
    bind_now: bool
    needed: Tuple[str, ...]
    slots: Dict[str, Tuple[int, bool]]
    phdrs: bytes


class _DlPhdrInfo(ctypes.Structure):
    _fields_ = [("dlpi_addr", ctypes.c_size_t), ("dlpi_name", ctypes.c_char_p),
                ("dlpi_phdr", ctypes.c_void_p), ("dlpi_phnum", ctypes.c_uint16)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_DlPhdrInfo), ctypes.c_size_t, ctypes.c_void_p)
_PHDR_SIZE = 56  # sizeof(Elf64_Phdr)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def loaded_objects() -> List[LoadedObject]:
    """Every shared object mapped into this process, from ``dl_iterate_phdr``.

    Returns:
        list of :class:`LoadedObject`: the ones with a file name (the main program has none).
    """
    found: List[LoadedObject] = []

    def visit(info, size, data):  # runs under the loader's lock: copy and return, nothing else
        entry = info.contents
        if entry.dlpi_name:
            phdrs = ctypes.string_at(entry.dlpi_phdr, entry.dlpi_phnum * _PHDR_SIZE) if entry.dlpi_phdr else b""
            found.append(LoadedObject(os.fsdecode(entry.dlpi_name), entry.dlpi_addr, phdrs))
        return 0

    _libc().dl_iterate_phdr(_CALLBACK(visit), None)
    return found


def _program_headers(phdrs: bytes) -> List[Tuple[int, int, int, int, int, int]]:
    """``(p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz)`` of each header."""
    headers = []
    for i in range(0, len(phdrs) - _PHDR_SIZE + 1, _PHDR_SIZE):
        p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = struct.unpack_from("<IIQQQQQQ", phdrs, i)
        headers.append((p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz))
    return headers


def read_jump_slots(path: str, symbols: Iterable[str]) -> ElfFacts:
    """The jump slots of ``symbols`` in the ELF library ``path``, read from its dynamic section.

    Args:
        path (str): a 64-bit little-endian ELF shared library.
        symbols: the function names whose slots are wanted.

    Returns:
        :class:`ElfFacts`: slots maps each name found to ``(r_offset, in RELRO)``;
        a name without a jump slot of the machine's type is absent.

    Raises:
        ElfError: when ``path`` is not such a library or its tables are not where its headers say.
    """
    wanted = set(symbols)
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF":
            raise ElfError(f"{path}: not an ELF file")
        if head[4] != 2 or head[5] != 1:
            raise ElfError(f"{path}: not a 64-bit little-endian ELF file")
        machine, = struct.unpack_from("<H", head, 18)
        if machine not in JUMP_SLOT_TYPE:
            raise ElfError(f"{path}: machine {machine} is not one whose jump slots this module knows")
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        if phentsize != _PHDR_SIZE:
            raise ElfError(f"{path}: program header size {phentsize}, expected {_PHDR_SIZE}")
        f.seek(phoff)
        phdrs = f.read(phnum * _PHDR_SIZE)
        headers = _program_headers(phdrs)
        loads = [h for h in headers if h[0] == PT_LOAD]

        def read_at(vaddr: int, size: int) -> bytes:
            for _, _, offset, start, filesz, _ in loads:
                if start <= vaddr and vaddr + size <= start + filesz:
                    f.seek(offset + vaddr - start)
                    data = f.read(size)
                    if len(data) == size:
                        return data
            raise ElfError(f"{path}: {size} bytes at 0x{vaddr:x} are in no loaded segment of the file")

        dynamic = [h for h in headers if h[0] == PT_DYNAMIC]
        if len(dynamic) != 1:
            raise ElfError(f"{path}: {len(dynamic)} dynamic segments")
        _, _, offset, _, filesz, _ = dynamic[0]
        f.seek(offset)
        raw = f.read(filesz)
        tags: Dict[int, int] = {}
        needed_offsets: List[int] = []
        for i in range(0, len(raw) - 15, 16):
            tag, value = struct.unpack_from("<qQ", raw, i)
            if tag == DT_NULL:
                break
            if tag == 1:  # DT_NEEDED
                needed_offsets.append(value)
            else:
                tags.setdefault(tag, value)
        for tag, name in ((DT_JMPREL, "DT_JMPREL"), (DT_PLTRELSZ, "DT_PLTRELSZ"), (DT_SYMTAB, "DT_SYMTAB"),
                          (DT_STRTAB, "DT_STRTAB"), (DT_STRSZ, "DT_STRSZ")):
            if tag not in tags:
                raise ElfError(f"{path}: no {name} in its dynamic section")
        if tags.get(DT_PLTREL, DT_RELA) != DT_RELA:
            raise ElfError(f"{path}: its PLT relocations are not RELA")
        syment = tags.get(DT_SYMENT, 24)
        strings = read_at(tags[DT_STRTAB], tags[DT_STRSZ])

        def name_at(offset: int) -> str:
            end = strings.find(b"\0", offset)
            return strings[offset:end if end >= 0 else len(strings)].decode(errors="replace")

        relro = [(h[3], h[3] + h[5]) for h in headers if h[0] == PT_GNU_RELRO]
        jump_slot = JUMP_SLOT_TYPE[machine]
        relocations = read_at(tags[DT_JMPREL], tags[DT_PLTRELSZ])
        entries = [struct.unpack_from("<QQq", relocations, i)[:2] for i in range(0, len(relocations) - 23, 24)]
        entries = [(r_offset, r_info >> 32) for r_offset, r_info in entries if r_info & 0xFFFFFFFF == jump_slot]
        slots: Dict[str, Tuple[int, bool]] = {}
        if entries:
            # The symbols the slots name, read in one piece rather than one read per slot.
            low, high = min(i for _, i in entries), max(i for _, i in entries)
            symbols_read = read_at(tags[DT_SYMTAB] + low * syment, (high - low) * syment + 4)
            for r_offset, index in entries:
                st_name, = struct.unpack_from("<I", symbols_read, (index - low) * syment)
                symbol = name_at(st_name)
                if symbol in wanted:
                    slots[symbol] = (r_offset, any(lo <= r_offset < hi for lo, hi in relro))
        bind_now = (DT_BIND_NOW in tags or bool(tags.get(DT_FLAGS, 0) & DF_BIND_NOW)
                    or bool(tags.get(DT_FLAGS_1, 0) & DF_1_NOW))
        return ElfFacts(machine, bind_now, tuple(name_at(o) for o in needed_offsets), slots, phdrs)


def find_loaded(basename: str) -> Optional[LoadedObject]:
    """The mapped shared object whose file is named ``basename``, or None.

    Args:
        basename (str): e.g. ``"libmlx.so"``.

    Returns:
        :class:`LoadedObject` or None; None also when two objects have that name.
    """
    matches = [o for o in loaded_objects() if os.path.basename(o.path) == basename]
    return matches[0] if len(matches) == 1 else None


def slots_of(obj: LoadedObject, symbols: Iterable[str]) -> Tuple[ElfFacts, Dict[str, JumpSlot]]:
    """The jump slots of ``symbols`` in the loaded object ``obj``, as addresses in this process.

    Args:
        obj (LoadedObject): from :func:`find_loaded`.
        symbols: function names.

    Returns:
        tuple: the :class:`ElfFacts` of its file, and symbol -> :class:`JumpSlot` for those found.

    Raises:
        ElfError: when the file on disk is not the one mapped (its program headers differ),
            or it cannot be read as :func:`read_jump_slots` says.
    """
    facts = read_jump_slots(obj.path, symbols)
    if facts.phdrs != obj.phdrs:
        raise ElfError(f"{obj.path}: the file's program headers differ from the mapped ones "
                       "(the file was replaced since it was loaded)")
    slots = {}
    for symbol, (offset, read_only) in facts.slots.items():
        address = obj.base + offset
        if address % ctypes.sizeof(ctypes.c_void_p):
            raise ElfError(f"{obj.path}: the jump slot of {symbol} at 0x{address:x} is not pointer-aligned")
        slots[symbol] = JumpSlot(symbol, address, read_only)
    return facts, slots


def read_slot(slot: JumpSlot) -> int:
    """The address the slot holds now (where the next call through it goes)."""
    return ctypes.c_void_p.from_address(slot.address).value or 0


def write_slot(slot: JumpSlot, target: int) -> None:
    """Points the slot at ``target``: one aligned pointer-sized store.

    A thread calling through the slot meanwhile jumps to either the old or the
    new function, never to a torn address. A slot in the RELRO range is made
    writable for the store and read-only again after it.

    Args:
        slot (JumpSlot): from :func:`slots_of`.
        target (int): a function address with the slot's function's signature.

    Raises:
        OSError: when ``mprotect`` refuses; the slot then holds what it held.
    """
    cell = ctypes.c_void_p.from_address(slot.address)
    protection = page_protection(slot.address)
    if protection is None:
        raise OSError(f"the jump slot of {slot.symbol} at 0x{slot.address:x} is in no mapping of /proc/self/maps")
    if protection & PROT_WRITE:
        cell.value = target
        return
    # Read-only (RELRO): writable for the one store, then as it was.
    page = os.sysconf("SC_PAGE_SIZE")
    start = slot.address - slot.address % page
    mprotect = _libc().mprotect
    mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if mprotect(start, page, protection | PROT_WRITE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mprotect of the page of {slot.symbol}'s jump slot: {os.strerror(err)}")
    try:
        cell.value = target
    finally:
        mprotect(start, page, protection)


def page_protection(address: int) -> Optional[int]:
    """The protection (``PROT_READ | PROT_WRITE | ...``) of the mapping that holds ``address``, from ``/proc/self/maps``.

    Returns:
        int or None: None when no mapping holds it.
    """
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            low, high = (int(x, 16) for x in span.split("-"))
            if low <= address < high:
                return ((PROT_READ if perms[0] == "r" else 0) | (PROT_WRITE if perms[1] == "w" else 0)
                        | (PROT_EXEC if perms[2] == "x" else 0))
    return None


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def symbol_at(address: int) -> Tuple[Optional[str], Optional[str], Optional[int]]:
    """What ``dladdr`` says of ``address``: ``(real path of its file, nearest symbol, that symbol's address)``.

    Returns:
        tuple: Nones where ``dladdr`` cannot tell.
    """
    if not address:
        return None, None, None
    info = _DlInfo()
    try:
        dladdr = _libc().dladdr  # in libc from glibc 2.34, in libdl before
    except AttributeError:
        try:
            dladdr = ctypes.CDLL(ctypes.util.find_library("dl") or "libdl.so.2").dladdr
        except (OSError, AttributeError):
            return None, None, None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None, None, None
    path = os.path.realpath(os.fsdecode(info.dli_fname))
    name = os.fsdecode(info.dli_sname) if info.dli_sname else None
    return path, name, info.dli_saddr
