"""The verdict of ``latentbench diagnose``: which picture of the prior-hole problem a cell shows,
decided from calibrated figures only (scorer v4) and read from a record's metrics and notes.

A figure is read against its **noise floor** (``notes["floors"]``; ``fid_floor`` for the FIDs): the
value it can reach when the prior is right, at the record's sample counts. "Beyond its floor" is not
enough to name a picture: a figure must also pass a size that matters (the constants below), so
that a well-fitted prior on a large sample is not called broken for a 3% variance error.

The pictures, tested in this order (the first that holds is the verdict):

1. ``collapsed``: no informative direction (``sub_dims`` 0, or ``notes["collapsed"]``); the decoder
   ignores z, so there is no gap to speak of.
2. ``matched`` (pictures): ``fid_prior_post`` <= ``FID_MATCH`` x ``fid_floor``: decoded prior samples
   are as far from posterior-mixture samples as two posterior-mixture draws are from each other. A
   latent figure that still differs is named in the sentence (the decoder does not show it).
2b. ``low_rank`` (pictures): the swap interventions place the image gap in the few informative
   directions: prior samples given the posterior mixture's component there decode like posterior
   samples (``fid_swap_sub`` within ``FID_MATCH`` x the floor, or a tenth of the gap) while the same swap
   in a random subspace of equal size does not (``fid_swap_sub_rand`` at least half the gap). Full-space
   figures that also differ (a 2% shell difference over 4096 directions moves ``hole_fraction`` to ~1)
   are named in the sentence: the decoder does not show them.
3. ``shells``: the norm shells ||z|| / sqrt(D) of prior and aggregate-posterior samples are apart by
   more than ``SHELL_SEP`` times their width (and ``SHELL_MIN``): the two live on different spheres.
   A radius difference that the few mismatched directions of the spectrum account for (at least
   ``EXPLAINED`` of the difference in E||z||^2 / D) is not a shell: it is read as rule 5.
4. ``holes``: the calibrated ``hole_fraction`` (0.01 when the prior is right) above ``HOLES`` and its
   floor: prior samples land where the aggregate posterior has almost no mass, in the full space.
5. ``low_rank``: the full space reads no gap (rules 3 and 4 do not hold) but the spectrum or the
   informative subspace does (``spec_wide``, ``spec_narrow`` or ``sub_spread`` above their floor and
   ``SPREAD_GAP``; ``sub_hole_fraction`` above its floor and ``HOLES``; ``mean_offset`` above its
   floor and ``OFFSET_GAP``), in few directions: fewer than ``FEW`` x D (counted from the spectrum's
   ``spec_wide_dims`` / ``spec_narrow_dims`` where the record has them, else from ``sub_dims``).
6. ``mismatch``: what none of the pictures describes: a spectrum off in many directions without
   separate shells or holes (e.g. a prior too narrow along every direction of a small latent), or an
   image gap (``fid_prior_post`` beyond its floor) that no latent figure shows.
7. ``matched`` (latent figures): no figure is beyond its floor by a size that matters.

Never used: ``mutual_info``, ``marginal_kl`` and ``sub_marginal_kl`` (bounds), ``kl`` and ``nll_iw``
(they measure the model, not the gap). The swap FIDs are used only as rule 2b's intervention, beside
their random-subspace control. A record of scorer v3 or
older has no calibrated figures: its verdict is ``uncalibrated`` unless it is collapsed.
"""

from __future__ import annotations

import math
from typing import Any

from latentbench.results import RecordLike, as_record

FID_MATCH = 1.5  # fid_prior_post within 1.5x the FID of two posterior-mixture draws: matched pictures
SHELL_SEP = 2.0  # norm shells apart by more than twice their width (std of ||z|| / sqrt(D))
SHELL_MIN = 0.02  # ... and by 2% of the radius
EXPLAINED = 0.5  # a radius difference half made by the few mismatched directions is theirs, not a shell
HOLES = 0.05  # hole fractions (0.01 when the prior is right) beyond 5x chance are holes
SPREAD_GAP = 1.5  # a variance ratio beyond 1.5 either way is a miss
OFFSET_GAP = 0.5  # a mean offset beyond half a prior standard deviation is a miss
FEW = 0.25  # a mismatch in fewer than a quarter of the D directions is low-rank

PICTURES = ("collapsed", "matched", "shells", "holes", "low_rank", "mismatch")


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _f(x: Any, spec: str = ".3f") -> str:
    """A number as text, never '-0.000'; 'absent' for a missing one."""
    v = _num(x)
    if v is None:
        return "absent"
    text = format(v, spec)
    return text.lstrip("-") if float(text) == 0 else text


def floor_of(name: str, m: dict[str, Any], notes: dict[str, Any]) -> float | None:
    """The noise floor of figure ``name``: ``notes["floors"]``, else ``fid_floor`` / ``kid_floor``."""
    floors = notes.get("floors") or {}
    if _num(floors.get(name)) is not None:
        return _num(floors[name])
    for kind in ("fid", "kid"):
        if name.startswith(f"{kind}_"):
            return _num(m.get(f"{kind}_floor"))
    return None


def _beyond(name: str, m: dict[str, Any], notes: dict[str, Any], target: float, size: float) -> bool:
    """Whether figure ``name`` is beyond its floor and beyond ``size`` (a value on the far side of the
    target ``target``; the figures read here only err upwards)."""
    v = _num(m.get(name))
    if v is None:
        return False
    floor = floor_of(name, m, notes)
    return v > size and (floor is None or v > floor) and v > target


def calibrated(notes: dict[str, Any]) -> bool:
    """Whether the figures come from a calibrated scorer (v4 or later; a dict without a version is taken
    as one)."""
    version = notes.get("scorer_version")
    return version is None or not isinstance(version, (int, float)) or version >= 4


def _mismatched_directions(m: dict[str, Any], notes: dict[str, Any]) -> tuple[int | None, float | None]:
    """(number of directions where the variance misses, their share of E||z_q||^2 - E||z_p||^2) from the
    spectrum's notes; (None, None) where the record has none."""
    vq, vp = notes.get("spec_var_post"), notes.get("spec_var_prior")
    floor = max(floor_of("spec_wide", m, notes) or 1.0, SPREAD_GAP)
    if not vq or not vp or len(vq) != len(vp):
        return None, None
    off = [(q, p) for q, p in zip(vq, vp) if p > 0 and q > 0 and max(q / p, p / q) > floor]
    count = notes.get("spec_wide_dims", 0) + notes.get("spec_narrow_dims", 0) if "spec_wide_dims" in notes else len(off)
    extra = sum(q - p for q, p in off)
    if _beyond("mean_offset", m, notes, 0.0, OFFSET_GAP):  # one more direction: the offset's
        extra += float(m["mean_offset"]) ** 2
        count += 1
    return int(count), extra


def _subspace_carries_gap(m: dict[str, Any], fid: float, fid_floor: float) -> bool:
    """The swap interventions say the image gap lives in the informative subspace: fixing the prior's
    component there closes it (``fid_swap_sub`` within ``FID_MATCH`` x the floor, or a tenth of the gap)
    while the same swap in a random subspace of equal size leaves at least half of it."""
    sub, rand = _num(m.get("fid_swap_sub")), _num(m.get("fid_swap_sub_rand"))
    if sub is None or rand is None or fid <= FID_MATCH * fid_floor:
        return False
    return sub <= max(FID_MATCH * fid_floor, 0.1 * fid) and rand >= 0.5 * fid


def _directions_text(n: int | None, k: Any, d: int) -> str:
    return (f"{n} of the D = {d} directions" if n is not None else
            f"the {_f(k, '.0f')} informative directions (of D = {d})")


def verdict(m: dict[str, Any], d: int, notes: dict[str, Any] | None = None) -> tuple[str, str]:
    """(picture, a sentence with the figures that decide it) from a cell's metrics ``m`` and notes at
    latent size ``d``; see the module docstring for the rules."""
    notes = notes or {}
    k = m.get("sub_dims")
    if k == 0 or notes.get("collapsed"):
        return "collapsed", (f"A collapsed latent: no direction of the posterior means varies (sub_dims {_f(k, '.0f')}, "
                             f"active_units {_f(m.get('active_units'), '.0f')} of {d}); the decoder ignores z, so "
                             "there is no prior hole to speak of.")
    if not calibrated(notes):
        return "uncalibrated", (f"Not decided: these figures come from scorer v{notes.get('scorer_version')}, whose "
                                "hole_fraction is not calibrated and which records no noise floors; re-score the "
                                "checkpoint with this latentbench (`latentbench score` or `latentbench diagnose`).")
    fid, fid_floor = _num(m.get("fid_prior_post")), floor_of("fid_prior_post", m, notes)
    fid_text = (f"fid_prior_post {_f(fid, '.2f')} against a noise floor of {_f(fid_floor, '.2f')} (the FID of two "
                "independent posterior-mixture draws)") if fid is not None and fid_floor is not None else ""
    spectrum = _spectrum_text(m, notes)
    n_dirs, explained = _mismatched_directions(m, notes)
    sub_miss = [name for name, target, size in (("spec_wide", 1.0, SPREAD_GAP), ("spec_narrow", 1.0, SPREAD_GAP),
                                                ("sub_spread", 1.0, SPREAD_GAP), ("sub_hole_fraction", 0.01, HOLES),
                                                ("mean_offset", 0.0, OFFSET_GAP))
                if _beyond(name, m, notes, target, size)]
    few = (n_dirs if n_dirs is not None else _num(k) or d) < FEW * d

    shells, shell_text = _shells(m, explained if few else None, d)
    holes = _beyond("hole_fraction", m, notes, 0.01, HOLES)
    latent_gap = shells or holes or bool(sub_miss)
    if fid is not None and fid_floor is not None and fid <= FID_MATCH * fid_floor:
        rest = (" The latent figures still differ (" + ", ".join(sub_miss + (["norm shells"] if shells else [])
                                                                 + (["hole_fraction"] if holes else []))
                + "), but the decoder does not show it.") if latent_gap else ""
        return "matched", f"Matched pictures: {fid_text}; decoded prior samples look like posterior samples.{rest}"
    tail = f" In image space: {fid_text}." if fid_text else ""
    if fid is not None and fid_floor is not None and few and _subspace_carries_gap(m, fid, fid_floor):
        also = [x for x, on in (("norm shells", shells), ("hole_fraction", holes)) if on]
        diffuse = (f" The full space also reads a difference ({', '.join(also)}: hole_fraction "
                   f"{_f(m.get('hole_fraction'))}, norm shells {_f(m.get('norm_prior'))} / {_f(m.get('norm_post'))}), "
                   "spread thinly over the other directions; the decoder does not show it.") if also else ""
        return "low_rank", (f"A low-rank mismatch: the image gap lives in the {_f(k, '.0f')} informative directions "
                            f"(of D = {d}). Prior samples given the posterior's component there decode like posterior "
                            f"samples (fid_swap_sub {_f(m['fid_swap_sub'], '.2f')}), the same swap in a random subspace "
                            f"of that size does not (fid_swap_sub_rand {_f(m['fid_swap_sub_rand'], '.2f')})."
                            f"{diffuse}{spectrum}{tail}")
    if shells:
        return "shells", shell_text + _offset_share(m, notes, d) + tail
    if holes:
        return "holes", (f"Holes in the full space: {100 * float(m['hole_fraction']):.0f}% of prior samples land where "
                         f"the aggregate posterior has almost no mass (hole_fraction {_f(m['hole_fraction'])}; 0.01 "
                         f"when the prior is right, floor {_f(floor_of('hole_fraction', m, notes), '.4f')})."
                         f"{spectrum}{tail}")
    if sub_miss and few:
        return "low_rank", (f"A low-rank mismatch: the full space reads no gap (hole_fraction "
                            f"{_f(m.get('hole_fraction'))}, norm shells {_f(m.get('norm_prior'))} / "
                            f"{_f(m.get('norm_post'))}), but along {_directions_text(n_dirs, k, d)} the prior misses "
                            f"the aggregate posterior: {', '.join(_figure(n, m, notes) for n in sub_miss)}."
                            f"{spectrum}{tail}")
    if sub_miss:
        return "mismatch", (f"A mismatch in many directions that neither shells nor holes show: "
                            f"{', '.join(_figure(n, m, notes) for n in sub_miss)} along "
                            f"{_directions_text(n_dirs, k, d)}.{spectrum}{tail}")
    if fid is not None and fid_floor is not None:
        return "mismatch", (f"An image gap that no latent figure shows: {fid_text}, {fid / fid_floor:.1f}x it, while "
                            "every calibrated latent figure is within its floor or close to it (the gap lies in what "
                            "they do not measure: higher moments or modes inside the informative subspace).")
    return "matched", (f"No substantial gap: hole_fraction {_f(m.get('hole_fraction'))} (0.01 when the prior is "
                       f"right), spec_wide {_f(m.get('spec_wide'), '.2f')}, spec_narrow {_f(m.get('spec_narrow'), '.2f')}, "
                       f"sub_spread {_f(m.get('sub_spread'), '.2f')} (1 = matched), mean_offset "
                       f"{_f(m.get('mean_offset'))}, norm shells {_f(m.get('norm_prior'))} / {_f(m.get('norm_post'))}."
                       + tail)


def _figure(name: str, m: dict[str, Any], notes: dict[str, Any]) -> str:
    floor = floor_of(name, m, notes)
    return f"{name} {_f(m.get(name), '.2f' if 'hole' not in name else '.3f')}" + \
        (f" (floor {_f(floor, '.3f')})" if floor is not None else "")


def _offset_share(m: dict[str, Any], notes: dict[str, Any], d: int) -> str:
    """How much of the shells' difference in E||z||^2 / D a mean offset beyond its floor makes."""
    if not _beyond("mean_offset", m, notes, 0.0, OFFSET_GAP):
        return ""
    npri, npost = float(m["norm_prior"]), float(m["norm_post"])
    spri, spost = _num(m.get("norm_prior_std")) or 0.0, _num(m.get("norm_post_std")) or 0.0
    d2 = (npost**2 + spost**2) - (npri**2 + spri**2)
    share = float(m["mean_offset"]) ** 2 / d / d2 if d2 > 0 else 0.0
    return (f" The aggregate posterior's mean lies {_f(m['mean_offset'], '.2f')} from the prior's (mean_offset), "
            f"which makes {100 * min(share, 1.0):.0f}% of that difference in E||z||^2 / D." if share > 0.1 else "")


def _spectrum_text(m: dict[str, Any], notes: dict[str, Any]) -> str:
    if _num(m.get("spec_wide")) is None and _num(m.get("spec_narrow")) is None:
        return ""
    return (f" Spectrum: the aggregate posterior is up to {_f(m.get('spec_wide'), '.2f')}x wider (spec_wide) and up "
            f"to {_f(m.get('spec_narrow'), '.2f')}x narrower (spec_narrow) than the prior along one direction.")


def _shells(m: dict[str, Any], explained: float | None, d: int) -> tuple[bool, str]:
    """(whether the norm shells are apart, the sentence). ``explained`` is the part of E||z_q||^2 -
    E||z_p||^2 that the few mismatched directions make (None when they are not few)."""
    npri, npost = _num(m.get("norm_prior")), _num(m.get("norm_post"))
    if npri is None or npost is None:
        return False, ""
    spri, spost = _num(m.get("norm_prior_std")) or 0.0, _num(m.get("norm_post_std")) or 0.0
    gap = npost - npri
    apart = abs(gap) > SHELL_SEP * max(spri, spost, 1e-3) and abs(gap) > SHELL_MIN
    if apart and explained is not None:
        d2 = (npost**2 + spost**2) - (npri**2 + spri**2)  # (E||z_q||^2 - E||z_p||^2) / D
        if abs(explained / d) >= EXPLAINED * abs(d2):
            apart = False  # the radius difference is made by the few mismatched directions
    return apart, (f"Different shells: prior samples have ||z||/sqrt(D) = {npri:.3f} ± {spri:.3f}, aggregate-posterior "
                   f"samples {npost:.3f} ± {spost:.3f} (Δ = {gap:+.3f}, more than {SHELL_SEP:g}x the shells' width): "
                   "they live on different spheres.")


def record_verdict(record: RecordLike) -> tuple[str, str]:
    """The verdict of one record (its metrics and notes at its latent size)."""
    from latentbench.latent import LatentShape

    record = as_record(record)
    return verdict(record.metrics or {}, LatentShape.parse(record.latent).dim, record.notes or {})


def _with_floor(name: str, m: dict[str, Any], notes: dict[str, Any], spec: str) -> str:
    floor = floor_of(name, m, notes)
    return _f(m.get(name), spec) + (f" ({_f(floor, spec)})" if floor is not None else "")


def summary_markdown(rows: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]) -> str:
    """One markdown table of verdicts: ``rows`` of (cell, metrics, notes), one per record, in the order
    remedy, latent size, seed; the figures that decide a verdict beside it."""
    from latentbench.latent import LatentShape

    def key(row: tuple[dict[str, Any], dict[str, Any], dict[str, Any]]) -> tuple:
        cell = row[0]
        return cell["remedy"], LatentShape.parse(cell["latent"]).sort_key(), cell.get("seed", 0)

    lines = ["| remedy | latent | seed | picture | fid_prior_post (floor) | hole_fraction (floor) | "
             "spec_wide / spec_narrow | sub_spread | mean_offset | sub_dims / D |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    counts: dict[str, int] = {}
    for cell, m, notes in sorted(rows, key=key):
        d = LatentShape.parse(cell["latent"]).dim
        picture, _ = verdict(m, d, notes)
        counts[picture] = counts.get(picture, 0) + 1

        lines.append(f"| {cell['remedy']} | {cell['latent']} | {cell.get('seed', 0)} | **{picture}** | "
                     f"{_with_floor('fid_prior_post', m, notes, '.2f')} | "
                     f"{_with_floor('hole_fraction', m, notes, '.3f')} | "
                     f"{_f(m.get('spec_wide'), '.2f')} / {_f(m.get('spec_narrow'), '.2f')} | "
                     f"{_f(m.get('sub_spread'), '.2f')} | {_f(m.get('mean_offset'), '.3f')} | "
                     f"{_f(m.get('sub_dims'), '.0f')} / {d} |")
    tally = ", ".join(f"{p} {counts[p]}" for p in (*PICTURES, "uncalibrated") if p in counts)
    head = ["# Verdicts", "",
            f"{len(rows)} records: {tally}. Each verdict is decided from calibrated figures only, each read "
            "against its noise floor (in brackets); the rules are in `latentbench/report/verdict.py` and "
            "README's diagnose section.", ""]
    return "\n".join(head + lines) + "\n"
