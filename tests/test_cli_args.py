"""Command-line flags come from :class:`verify.Options` (one source of defaults and help)."""

from __future__ import annotations

import dataclasses

import pytest

from verify.cli_args import UsageError, build_parser, options_from_args
from verify.options import Options


def test_every_option_is_a_flag_with_the_library_default() -> None:
    parser = build_parser()
    args = parser.parse_args(["net.pt"])
    assert options_from_args(args) == Options()
    help_text = " ".join(parser.format_help().split())
    for f in dataclasses.fields(Options):
        flag = "--" + f.name.replace("_", "-")
        assert flag in help_text and " ".join(f.metadata["help"].split()) in help_text
        assert f.name in (Options.__doc__ or "")


def test_flags_reach_options() -> None:
    args = build_parser().parse_args(
        ["net.pt", "--alpha-steps", "3", "--lp-layerwise", "--sdp-triangle", "--attack-step-size", "0.25",
         "--dtype", "float32", "--timeout", "7", "--bounds", "interval"])
    opts = options_from_args(args)
    assert (opts.alpha_steps, opts.lp_layerwise, opts.sdp_triangle, opts.attack_step_size, opts.dtype,
            opts.timeout, opts.bounds) == (3, True, True, 0.25, "float32", 7.0, "interval")


@pytest.mark.parametrize("flags,needle", [
    (["--alpha-lr", "-1"], "--alpha-lr"), (["--sdp-workers", "0"], "--sdp-workers"),
    (["--time-limit", "0"], "--time-limit"), (["--device", "tpu:0"], "--device"),
])
def test_invalid_option_values_name_the_flag(flags: list[str], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        options_from_args(build_parser().parse_args(["net.pt", *flags]))
