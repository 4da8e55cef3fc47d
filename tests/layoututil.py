"""Builders of `lfs getstripe -y` text in LUSTRE.md's formats (plain, composite/PFL, DoM, FLR),
shared by the layout parser's tests and the striped-export test."""
from __future__ import annotations


def objects(osts):
    return "".join(f"\n      - l_ost_idx: {o}\n        l_fid:     0x{o + 1:x}00000000:0x2:0x0" for o in osts)


def sub(count, size, osts, pattern="raid0", offset=None, indent="      "):
    head = (f"lmm_stripe_count:  {count}\nlmm_stripe_size:   {size}\nlmm_pattern:       {pattern}\n"
            f"lmm_layout_gen:    0\n")
    if pattern == "mdt":
        head += "lmm_stripe_offset: 0\nlmm_mdt_index:     0"
    else:
        head += f"lmm_stripe_offset: {osts[0] if osts else offset if offset is not None else -1}"
    if osts:
        head += "\nlmm_objects:" + objects(osts)
    if indent:
        head = "\n".join(indent + ln if not ln.startswith("      -") and not ln.startswith("        l_fid")
                         else ln for ln in head.splitlines())
    return head


def comp(cid, mirror, flags, start, end, body):
    return (f"  - lcme_id:             {cid}\n    lcme_mirror_id:      {mirror}\n    lcme_flags:          {flags}\n"
            f"    lcme_extent.e_start: {start}\n    lcme_extent.e_end:   {end}\n    sub_layout:\n{body}")


def composite(gen, mirrors, comps):
    return (f"lcm_layout_gen:    {gen}\nlcm_mirror_count:  {mirrors}\nlcm_entry_count:   {len(comps)}\ncomponents:\n"
            + "\n".join(comps))
