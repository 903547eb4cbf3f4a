"""The torch hash grid against a direct per-point transcription of tiny-cuda-nn's formulas, gradients against
finite differences, and (on a GPU) against tiny-cuda-nn itself."""

from __future__ import annotations

import math

import pytest
import torch

from renderers.hash_grid import PRIMES, HashGrid, HashGridConfig, hash_grid_encode, level_layout

TINY = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=8, base_resolution=3, per_level_scale=2.0)


def direct_encoding(point: list[float], table: torch.Tensor, config: HashGridConfig) -> list[float]:
    """One point, plain Python integers: tcnn's grid_index (dense while the level fits, else uint32 XOR hash,
    then modulo the level's size) and D-linear interpolation."""
    D = len(point)
    out, offset = [], 0
    for level in range(config.n_levels):
        scale = float(torch.tensor(level * math.log2(config.per_level_scale)).exp2() * config.base_resolution - 1)
        res = math.ceil(scale) + 1
        size = min(-(-res**D // 8) * 8, 2**config.log2_hashmap_size)
        pos = [float(torch.tensor(p, dtype=torch.float64) * scale + 0.5) for p in point]
        base = [math.floor(p) for p in pos]
        frac = [p - b for p, b in zip(pos, base)]
        feats = [0.0] * config.n_features_per_level
        for corner in range(2**D):
            bits = [(corner >> (D - 1 - d)) & 1 for d in range(D)]
            vertex = [b + bit for b, bit in zip(base, bits)]
            weight = math.prod(f if bit else 1 - f for f, bit in zip(frac, bits))
            if res**D <= size:
                index = sum(v * res**d for d, v in enumerate(vertex))
            else:
                index = 0
                for d, v in enumerate(vertex):
                    index ^= (v * PRIMES[d]) & 0xFFFFFFFF
            index %= size
            for f in range(config.n_features_per_level):
                feats[f] += weight * float(table[f, offset + index])
        out += feats
        offset += size
    return out


@pytest.mark.parametrize("n_dims", [3, 4])
@pytest.mark.parametrize("config", [TINY, HashGridConfig(n_levels=3, log2_hashmap_size=16, base_resolution=16,
                                                          per_level_scale=3.0)])
def test_torch_grid_matches_a_direct_per_point_computation(n_dims, config):
    levels = level_layout(config, n_dims)
    assert any(lv.dense for lv in levels) and any(not lv.dense for lv in levels), "want dense and hashed levels"
    grid = HashGrid(n_dims, config).double()
    torch.nn.init.normal_(grid.table, generator=torch.Generator().manual_seed(1))
    points = torch.rand(10, n_dims, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    points[0] = 1.0  # the far corner: a dense index past the table wraps, as in tcnn
    points[1] = 0.0
    got = grid(points).detach()
    want = torch.tensor([direct_encoding(p.tolist(), grid.table.detach(), config) for p in points], dtype=got.dtype)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_paper_layout_follows_tiny_cuda_nn():
    levels = level_layout(HashGridConfig(), 3)
    assert len(levels) == 16
    assert (levels[0].resolution, levels[0].size, levels[0].dense) == (16, 4096, True)
    assert levels[-1].resolution == math.ceil(16 * 1.447269237440378**15 - 1) + 1  # ~4096 at the finest level
    for lv in levels:
        assert lv.size % 8 == 0 and lv.size <= 2**19
        assert lv.dense == (lv.resolution**3 <= lv.size)
    offsets = [lv.offset for lv in levels]
    assert offsets == sorted(offsets) and offsets[0] == 0
    four_d = level_layout(HashGridConfig(), 4)
    assert sum(lv.dense for lv in four_d) < sum(lv.dense for lv in levels)


@pytest.mark.parametrize("n_dims", [3, 4])
def test_gradients_pass_gradcheck_in_float64(n_dims):
    # a table small enough for numerical differences per entry, still with dense and hashed levels
    config = HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=6, base_resolution=2,
                            per_level_scale=2.0)
    grid = HashGrid(n_dims, config).double()
    assert any(lv.dense for lv in grid.levels) and any(not lv.dense for lv in grid.levels)
    torch.nn.init.normal_(grid.table, generator=torch.Generator().manual_seed(3))
    # keep points off cell borders, where the interpolation is not differentiable in x
    points = (torch.rand(4, n_dims, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 0.9 + 0.05)
    points.requires_grad_(True)
    table = grid.table.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w: hash_grid_encode(x, w, grid.levels), (points, table),
                                    eps=1e-6, atol=1e-6)


def test_table_gradient_matches_plain_autograd_on_a_paper_sized_level():
    grid = HashGrid(3, HashGridConfig(n_levels=6))
    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(5))
    weights = torch.randn(500, grid.n_output_dims, generator=torch.Generator().manual_seed(6))
    (grid(points) * weights).sum().backward()
    # reference: the same gathers with autograd's own index backward
    from renderers.hash_grid import corner_indices

    table = grid.table.detach().clone().requires_grad_(True)
    outs = []
    for lv in grid.levels:
        idx, w = corner_indices(points, lv)
        rows = table[:, lv.offset:lv.offset + lv.size]
        outs.append((rows[:, idx.long()] * w).sum(1).t())
    (torch.cat(outs, 1) * weights).sum().backward()
    torch.testing.assert_close(grid.table.grad, table.grad, rtol=1e-4, atol=1e-6)


def test_shapes_empty_input_and_wrong_dimension():
    grid = HashGrid(3, TINY)
    assert grid(torch.rand(2, 5, 3)).shape == (2, 5, TINY.n_output_dims)
    assert grid(torch.zeros(0, 3)).shape == (0, TINY.n_output_dims)
    with pytest.raises(ValueError, match="3-D points"):
        grid(torch.rand(4, 4))
    with pytest.raises(ValueError, match="n_features_per_level"):
        HashGridConfig(n_features_per_level=3)


@pytest.mark.gpu
@pytest.mark.parametrize("n_dims", [3, 4])
def test_tiny_cuda_nn_matches_the_torch_grid(n_dims):
    pytest.importorskip("tinycudann")
    grid = HashGrid(n_dims, HashGridConfig(n_levels=8, log2_hashmap_size=17)).cuda()
    torch.nn.init.uniform_(grid.table, -1, 1)
    points = torch.rand(10000, n_dims, device="cuda")
    fast = grid(points)
    assert grid._tcnn is not None, "tinycudann is installed but was not used"
    reference = hash_grid_encode(points, grid.table, grid.levels)
    torch.testing.assert_close(fast, reference, rtol=1e-3, atol=1e-3)
    g = torch.randn_like(fast)
    (fast * g).sum().backward()
    grad_fast = grid.table.grad.clone()
    grid.table.grad = None
    (hash_grid_encode(points, grid.table, grid.levels) * g).sum().backward()
    torch.testing.assert_close(grad_fast, grid.table.grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("n_dims", [3, 4])
def test_level_pieces_threads_and_recomputed_corners_change_nothing(monkeypatch, n_dims):
    """The encoding cuts levels into pieces for memory, gathers and scatters from a thread pool and keeps or
    recomputes corners for the backward: every combination gives the same values and gradients."""
    import renderers.hash_grid as hg

    grid = HashGrid(n_dims, HashGridConfig(n_levels=6, log2_hashmap_size=12, base_resolution=4)).double()
    torch.nn.init.normal_(grid.table, generator=torch.Generator().manual_seed(7))
    points = torch.rand(300, n_dims, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    weights = torch.randn(300, grid.n_output_dims, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def run():
        table = grid.table.detach().clone().requires_grad_(True)
        p = points.clone().requires_grad_(True)
        out = hash_grid_encode(p, table, grid.levels)
        (out * weights).sum().backward()
        return out.detach(), table.grad, p.grad

    reference = run()
    threads = torch.get_num_threads()
    try:
        for piece_max, save_max, n_threads in [(1 << 23, 1 << 24, 1), (64, 1 << 24, 2), (64, 0, 2), (1 << 23, 0, 3)]:
            monkeypatch.setattr(hg, "PIECE_MAX", piece_max)
            monkeypatch.setattr(hg, "SAVE_CORNERS_MAX", save_max)
            torch.set_num_threads(n_threads)
            for got, want in zip(run(), reference):
                torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    finally:
        torch.set_num_threads(threads)



def test_shared_table_gradient_equals_separate_calls():
    """Inside shared_table_gradient, several encodings of one grid (a render's ray segments) add to one table
    gradient: the same as separate calls, for .backward, for autograd.grad w.r.t. the table, with a retained
    graph backed twice, and with a backward pass that only wants the points (which must leave nothing behind)."""
    from renderers.hash_grid import shared_table_gradient

    grid = HashGrid(3, HashGridConfig(n_levels=5, log2_hashmap_size=10, base_resolution=4)).double()
    torch.nn.init.normal_(grid.table, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    batches = [torch.rand(n, 3, dtype=torch.float64, generator=gen) for n in (50, 80, 30)]

    def loss(points):
        return sum((grid(p) * (k + 1)).square().sum() for k, p in enumerate(points))

    grid.table.grad = None
    loss(batches).backward()
    separate = grid.table.grad.clone()

    grid.table.grad = None
    with shared_table_gradient(grid):
        assert grid._sharing
        # a points-only backward first (as analytic normals do); its table gradient must not leak
        probe = batches[0].clone().requires_grad_(True)
        (points_grad,) = torch.autograd.grad(loss([probe]), probe)
        assert torch.isfinite(points_grad).all()
        total = loss(batches)
        (by_grad,) = torch.autograd.grad(total, grid.table, retain_graph=True)
        total.backward()
    assert not grid._sharing and grid._token is None
    torch.testing.assert_close(by_grad, separate, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grid.table.grad, separate, rtol=1e-12, atol=1e-12)
