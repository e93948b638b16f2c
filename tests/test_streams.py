"""Random streams are named: one generator per (seed, stage name), no offsets, no throwaway draws."""

import io
import re
import tokenize
from pathlib import Path

import torch

from latentbench.streams import stream, stream_seed

PKG = Path(__file__).parents[1] / "latentbench"


def _code_only(path: Path) -> list[tuple[int, str]]:
    """(line number, code) with comments and string literals blanked out."""
    lines = path.read_text().splitlines(keepends=True)
    out = [list(line) for line in lines]
    for tok in tokenize.generate_tokens(io.StringIO("".join(lines)).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            (r0, c0), (r1, c1) = tok.start, tok.end
            for r in range(r0, r1 + 1):
                row = out[r - 1]
                lo = c0 if r == r0 else 0
                hi = c1 if r == r1 else len(row)
                for c in range(lo, min(hi, len(row))):
                    if row[c] != "\n":
                        row[c] = " "
    return [(i + 1, "".join(row)) for i, row in enumerate(out)]


# seed + 17, cell.seed * 1_000_003, 10_000 + seed; hp["seed"] + 1 (its key is a blanked string, so that form
# is matched on the raw line); and a throwaway draw to re-seed, int(torch.randint(2**31 - 1, ...))
_OFFSET = re.compile(r"\b\w*seed\b\s*[-+*]|[-+*]\s*\b[\w.]*seed\b(?!\s*\()")
_SUBSCRIPT = re.compile(r"\[\s*[\"']\w*seed[\"']\s*\]\s*[-+*]")
_THROWAWAY = re.compile(r"randint\(\s*2\s*\*\*")


def test_no_seed_offsets_or_throwaway_draws_in_the_package():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        raw = path.read_text().splitlines()
        for n, code in _code_only(path):
            if _OFFSET.search(code) or _THROWAWAY.search(code) or _SUBSCRIPT.search(raw[n - 1]):
                bad.append(f"{path.relative_to(PKG.parent)}:{n}: {raw[n - 1].strip()}")
    assert not bad, "seed offsets or throwaway draws (use latentbench.streams.stream(seed, name)):\n" + "\n".join(bad)


def test_the_offset_check_catches_what_it_is_for():
    for line in ("g.manual_seed(seed + 17)", "torch.manual_seed(seed * 1_000_003 + epoch)", "x = 10_000 + seed",
                 "s = cell.seed + 1", "int(torch.randint(2**31 - 1, (1,), generator=g))"):
        assert _OFFSET.search(line) or _THROWAWAY.search(line), line
    assert _SUBSCRIPT.search('torch.manual_seed(hp["seed"] + 1)')
    for line in ("stream_seed(seed, name) % 2**32", "stream(seed, f'train/epoch/{epoch}')"):
        assert not _OFFSET.search(line) and not _THROWAWAY.search(line), line


def test_named_streams_do_not_depend_on_call_order():
    a1 = torch.randn(5, generator=stream(3, "fit/a"))
    b1 = torch.randn(5, generator=stream(3, "fit/b"))
    b2 = torch.randn(5, generator=stream(3, "fit/b"))  # b first this time, after a draw from a
    torch.randn(100, generator=stream(3, "fit/a"))
    a2 = torch.randn(5, generator=stream(3, "fit/a"))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.equal(a1, b1)
    assert stream_seed(3, "fit/a") != stream_seed(4, "fit/a")


def test_a_sub_stream_of_a_generator_hashes_its_seed_and_never_draws_from_it():
    parent = stream(0, "expost/fit")
    child = torch.randn(4, generator=stream(parent, "flow"))
    before = parent.get_state().clone()
    torch.randn(10, generator=parent)  # whatever the parent has drawn, the child is the same
    assert torch.equal(torch.randn(4, generator=stream(parent, "flow")), child)
    again = stream(0, "expost/fit")
    stream(again, "flow")
    assert torch.equal(again.get_state(), before)
    assert stream_seed(parent, "flow") == stream_seed(stream_seed(0, "expost/fit"), "flow")


def test_scoring_streams_are_still_importable_from_their_old_place():
    from latentbench.score import streams

    assert streams.stream_seed(0, "latents/reference") == stream_seed(0, "latents/reference")
