"""Blocks and networks (SPEC.md §4): the residual structure, hybrids, streaming."""

import numpy as np
import pytest
import torch

from bistable.nn import GLUMLP, Block, Network, parse_mixers
from streaming import assert_nested_close, stepped


def test_parse_mixers():
    assert parse_mixers("lru") == [("lru",)]
    assert parse_mixers("lru+bmru") == [("lru", "bmru")]
    assert parse_mixers("lru, bmru") == [("lru",), ("bmru",)]
    assert parse_mixers(["lru+bmru", ("gru",)]) == [("lru", "bmru"), ("gru",)]
    for bad in ("", "lru+", "lru,,bmru", [], None, [1], [["lru", 1]]):
        with pytest.raises(ValueError, match="mixer"):
            parse_mixers(bad)


def test_block_is_prenorm_mixer_then_prenorm_glu_mlp():
    torch.manual_seed(0)
    block = Block(6, ("lru", "bmru"), norm="rms").double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    u_in = block.norm1(x)
    mixed = x + block.units[0](u_in)[0] + block.units[1](u_in)[0]
    up = block.mlp.up(block.norm2(mixed))
    a, g = up.chunk(2, dim=-1)
    expected = mixed + block.mlp.down(a * torch.sigmoid(g))
    y, state = block(x)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    assert isinstance(state, tuple) and len(state) == 2
    assert isinstance(block.norm1, torch.nn.RMSNorm)
    assert block.mlp.down.in_features == 4 * 6


def test_glu_mlp_width():
    mlp = GLUMLP(5, ratio=2)
    assert mlp.up.out_features == 20 and mlp.down.in_features == 10
    assert mlp(torch.randn(3, 5)).shape == (3, 5)


def test_unit_kwargs_reach_the_units():
    block = Block(4, "lru+cmru", unit_kwargs={"lru": {"state_size": 7}, "cmru": {"epsilon": 0.5}})
    assert block.units[0].state_size == 7
    assert torch.all(block.units[1].epsilon() == 0.5)


@pytest.mark.parametrize("mixer", ["lru+bmru", "lru,bmru", "gru+lstm", "cmru,brc+nbrc,mingru"])
def test_network_forward_equals_step_and_split_forwards_continue(mixer):
    torch.manual_seed(1)
    net = Network(3, 2, hidden=6, layers=3, mixer=mixer).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    y, state = net(x)
    assert y.shape == (2, 7, 2)
    y_step, state_step = stepped(net, x)
    torch.testing.assert_close(y, y_step, rtol=1e-9, atol=1e-9)
    assert_nested_close(state, state_step)
    y1, s1 = net(x[:, :3])
    y2, s2 = net(x[:, 3:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, rtol=1e-9, atol=1e-9)
    assert_nested_close(s2, state)


def test_alternating_and_side_by_side_layouts():
    alternating = Network(1, 1, hidden=4, layers=4, mixer="lru,bmru")
    assert [b.mixer for b in alternating.blocks] == [("lru",), ("bmru",)] * 2
    side = Network(1, 1, hidden=4, layers=2, mixer="lru+bmru")
    assert all(len(b.units) == 2 for b in side.blocks)


def test_network_gradients_reach_every_parameter():
    torch.manual_seed(2)
    net = Network(3, 2, hidden=6, layers=2, mixer="lru+mingru").double()
    y, _ = net(torch.randn(4, 5, 3, dtype=torch.float64))
    y.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_network_checks_its_arguments():
    net = Network(3, 2, hidden=4, layers=2, mixer="bmru")
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, 3\)"):
        net(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 3\)"):
        net.step(torch.randn(2, 4))
    with pytest.raises(ValueError, match="state: expected a tuple of 2 block states or None, "
                                         "got a tuple of 1"):
        net(torch.randn(2, 5, 3), state=(None,))
    with pytest.raises(ValueError, match="state: expected a tuple of 1 unit states or None, "
                                         "got a tuple of 2"):
        net(torch.randn(2, 5, 3), state=((None, None), None))
    with pytest.raises(ValueError, match="unit: expected one of"):
        Network(3, 2, mixer="transformer")
    with pytest.raises(ValueError, match="norm: expected one of"):
        Network(3, 2, norm="batch")
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match=f"hidden: expected a positive int, got {bad!r}"):
            Network(3, 2, hidden=bad)
    assert Network(3, 2, hidden=np.int64(4), layers=np.int64(1)).decoder.in_features == 4


def test_a_network_holds_each_of_its_mixers():
    with pytest.raises(ValueError, match="layers: expected at least 2, one block per mixer of "
                                         "'lru,bmru', got 1"):
        Network(3, 2, hidden=4, layers=1, mixer="lru,bmru")
    odd = Network(3, 2, hidden=4, layers=3, mixer="lru,bmru")
    assert [b.mixer for b in odd.blocks] == [("lru",), ("bmru",), ("lru",)]


def test_unit_kwargs_must_name_units_of_the_mixer():
    with pytest.raises(ValueError, match="unit_kwargs: expected keys among the mixer's units "
                                         "lru, bmru, got 'gru'"):
        Network(3, 2, hidden=4, mixer="lru+bmru", unit_kwargs={"gru": {"zz": 1}})
    with pytest.raises(ValueError, match="unit_kwargs: expected keys among the mixer's units "
                                         "lru, got 'cmru'"):
        Block(4, "lru", unit_kwargs={"cmru": {"epsilon": 0.5}})
    net = Network(3, 2, hidden=4, mixer="lru,cmru",
                  unit_kwargs={"lru": {"state_size": 7}, "cmru": {"epsilon": 0.5}})
    assert net.blocks[0].units[0].state_size == 7
    assert torch.all(net.blocks[1].units[0].epsilon() == 0.5)


def test_glu_mlp_parameter_count():
    """W_1 (2·r·d × d) and its bias, W_2 (d × r·d) and its bias."""
    from bistable.models import count_parameters

    d, r = 5, 2
    assert count_parameters(GLUMLP(d, r)) == 2 * r * d * d + 2 * r * d + r * d * d + d


def test_a_block_checks_its_sizes():
    with pytest.raises(ValueError, match="mlp_ratio: expected a positive int, got 0"):
        Block(4, "bmru", mlp_ratio=0)
    with pytest.raises(ValueError, match="size: expected a positive int, got 0"):
        Block(0, "bmru")


def test_an_unknown_unit_option_is_a_value_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"lru: unknown option\(s\) nosuch; valid: .*r_min"):
        Block(4, "lru", unit_kwargs={"lru": {"nosuch": 1}})
