"""Which GPUs CUDA shows a process: CUDA_VISIBLE_DEVICES read by CUDA's own rules."""

from __future__ import annotations

import re


def visible_gpus(spec: str | None, uuids: list[str], mig_parents: dict[str, int]) -> tuple[list[tuple[int, str]], str]:
    """Return the GPUs CUDA shows a process under CUDA_VISIBLE_DEVICES=``spec``, and why any entry was dropped.

    ``uuids`` are NVML's GPU UUIDs by NVML index; ``mig_parents`` maps each MIG slice's UUID to its
    GPU's NVML index. Each GPU comes back as (NVML index, MIG slice UUID or ""), in CUDA's order.
    The rules, from CUDA's documentation (CUDA_VISIBLE_DEVICES in the CUDA C Programming Guide's
    environment variables, and the MPS guide) and PyTorch's mirror of them
    (``torch.cuda._parse_visible_devices`` and ``_transform_uuid_to_ordinals``):
    unset, all GPUs; empty, none; else a comma list in one form, set by the first entry:
    indices (read like C's strtoul: ``1gpu`` is 1), ``GPU-`` UUIDs, or ``MIG-`` UUIDs
    (also the pre-R470 ``MIG-GPU-<uuid>/<gi>/<ci>``). A UUID may be shortened to any prefix
    that names one device, ``GPU-`` included (a bare UUID is read as an index). The first
    entry that names nothing (or several) ends the list; a device named twice empties it.
    """
    if spec is None:
        return [(i, "") for i in range(len(uuids))], ""
    form = next((prefix for prefix in ("GPU-", "MIG-") if spec.startswith(prefix)), "")
    chosen: list[tuple[int, str]] = []
    for entry in (e.strip() for e in spec.split(",")):
        found, why = _resolve(entry, form, uuids, mig_parents)
        if found is None:
            return chosen, f"{entry!r} {why}, so CUDA ignores it and every entry after it"
        if found in chosen:
            return [], f"{entry!r} names a GPU already listed, and CUDA then shows no GPU at all"
        chosen.append(found)
    return chosen, ""


def _resolve(entry: str, form: str, uuids: list[str], mig_parents: dict[str, int]):
    """Return ((NVML index, MIG UUID or ""), "") for one CUDA_VISIBLE_DEVICES entry, or (None, why not)."""
    if not form:
        match = re.match(r"[+-]?\d+", entry)
        if match is None:
            return None, "is not a GPU index (the list began with an index)"
        index = int(match.group())
        if not 0 <= index < len(uuids):
            return None, f"is not a GPU index here (NVML lists {len(uuids)}, from 0)"
        return (index, ""), ""
    if not entry.startswith(form):
        return None, f"does not start with {form!r} as the list's first entry does"
    if entry.startswith("MIG-GPU-"):  # before driver R470: MIG-<GPU UUID>/<GPU instance>/<compute instance>
        index, why = _unique_prefix(entry[4:].split("/")[0], uuids)
        return ((index, entry), "") if index is not None else (None, why)
    if form == "MIG-":
        slices = list(mig_parents)
        index, why = _unique_prefix(entry, slices)
        return ((mig_parents[slices[index]], slices[index]), "") if index is not None else (None, why)
    index, why = _unique_prefix(entry, uuids)
    return ((index, ""), "") if index is not None else (None, why)


def _unique_prefix(prefix: str, candidates: list[str]):
    """Return (the position of the one candidate starting with ``prefix``, "") or (None, why not)."""
    matches = [i for i, candidate in enumerate(candidates) if candidate.startswith(prefix)]
    if not matches:
        return None, "matches no device here"
    if len(matches) > 1:
        return None, f"matches {len(matches)} devices here"
    return matches[0], ""
