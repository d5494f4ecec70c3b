import math

import pytest
import torch
from torch_geometric.data import Data

from pointcmt_pyg.datasets.transforms import (
    Jitter,
    NormalizeBoundingBox,
    RandomRotateUp,
    RandomScale,
    RandomShift,
    SamplePoints,
    SampleSurface,
    normalize_bbox,
    rotation_about_axis,
    sample_surface,
)


def _asym_cloud():
    # Three points at the origin and one far corner: mean (1, .5, .25), bbox centre (2, 1, .5).
    return torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [4.0, 2.0, 1.0]])


def test_normalize_bbox_centres_the_box_not_the_mean():
    out, center, scale = normalize_bbox(_asym_cloud(), return_params=True)
    expected = torch.tensor([[-0.5, -0.25, -0.125]] * 3 + [[0.5, 0.25, 0.125]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(center, torch.tensor([[2.0, 1.0, 0.5]]))
    torch.testing.assert_close(scale, torch.tensor([[4.0]]))
    # Mean-centring would put the far point at (4 - 1) / 4 = 0.75 > 0.5.
    mean_centred = _asym_cloud() - _asym_cloud().mean(0)
    assert float(mean_centred.abs().max()) / 4.0 > 0.5 + 1e-6
    assert float(out.amax(0).max()) == pytest.approx(0.5) and float(out.amin(0).min()) == pytest.approx(-0.5)


def _official_scale(pc):
    """The official PointCMT ``scale()`` (train_pointcmt.py) for one batch [B, N, 3], written
    out: each axis is shifted by ``(min - (size - extent)) / 2`` and divided by the largest
    extent ``size``, then moved so that this shifted minimum lands at -0.5."""
    lo, hi = pc.min(1).values, pc.max(1).values
    extent = hi - lo
    size = extent.max(1, keepdim=True).values
    shifted_min = (lo - (size - extent)) / 2
    return pc / size[:, None] + (-0.5 - shifted_min / size)[:, None]


def test_normalize_bbox_by_hand_with_the_official_scale_beside_it():
    # x spans [3, 4] (the largest extent, 1), y [0, 0.5], z [0, 0.25].
    pc = torch.tensor([[[3.0, 0.0, 0.0], [4.0, 0.5, 0.25], [3.5, 0.25, 0.1]]])
    # Ours by hand: minus the box centre (3.5, 0.25, 0.125), over the largest extent 1.
    torch.testing.assert_close(normalize_bbox(pc), torch.tensor(
        [[[-0.5, -0.25, -0.125], [0.5, 0.25, 0.125], [0.0, 0.0, -0.025]]]))
    # The official scale() by hand: x - 2, y - 0.25, z - 0.125. It does not centre the box:
    # the axes with minimum 0 come out centred, x comes out in [1, 2].
    official = _official_scale(pc)
    torch.testing.assert_close(official, torch.tensor(
        [[[1.0, -0.25, -0.125], [2.0, 0.25, 0.125], [1.5, 0.0, -0.025]]]))
    # Where every minimum is 0 the two agree.
    at_zero = pc - pc.min(1, keepdim=True).values
    torch.testing.assert_close(_official_scale(at_zero), normalize_bbox(at_zero))


def test_normalize_bbox_batched_and_degenerate():
    a = torch.randn(50, 3) * torch.tensor([3.0, 1.0, 0.2]) + 7.0
    b = torch.rand(50, 3)
    out = normalize_bbox(torch.stack([a, b]))
    torch.testing.assert_close(out[0], normalize_bbox(a))
    torch.testing.assert_close(out[1], normalize_bbox(b))
    extent = out.amax(1) - out.amin(1)
    torch.testing.assert_close(extent.amax(-1), torch.ones(2))
    torch.testing.assert_close(out.amax(1) + out.amin(1), torch.zeros(2, 3), atol=1e-6, rtol=0)
    single = normalize_bbox(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    torch.testing.assert_close(single, torch.zeros(2, 3))


@pytest.mark.parametrize("bad", [torch.zeros(5, 2), torch.zeros(0, 3), torch.zeros(4, 3, dtype=torch.long), [[0, 0, 0]]])
def test_normalize_bbox_rejects_bad_input(bad):
    with pytest.raises((ValueError, TypeError), match="pos"):
        normalize_bbox(bad)


def test_normalize_bounding_box_transform_moves_mesh_identically():
    pos = _asym_cloud()
    mesh_pos = torch.tensor([[-1.0, 0.0, 0.0], [4.0, 2.0, 1.0], [0.0, 3.0, 0.0]])
    data = Data(pos=pos, mesh_pos=mesh_pos, mesh_face=torch.tensor([[0, 1, 2]]))
    out = NormalizeBoundingBox()(data)
    torch.testing.assert_close(out.pos, normalize_bbox(pos))
    torch.testing.assert_close(out.mesh_pos, (mesh_pos - torch.tensor([2.0, 1.0, 0.5])) / 4.0)
    assert data.pos is pos  # input left untouched
    out = NormalizeBoundingBox(reference="mesh")(data)
    # Mesh box: min (-1, 0, 0), max (4, 3, 1): centre (1.5, 1.5, .5), extent 5.
    torch.testing.assert_close(out.mesh_pos, normalize_bbox(mesh_pos))
    torch.testing.assert_close(out.pos, (pos - torch.tensor([1.5, 1.5, 0.5])) / 5.0)
    with pytest.raises(ValueError, match="reference"):
        NormalizeBoundingBox(reference="points")


def test_random_scale_one_factor_per_axis_uniform_in_range():
    pos = torch.randn(20, 3)
    mesh = torch.randn(5, 3)
    factors = []
    for seed in range(2000):
        out = RandomScale((0.5, 2.0), generator=torch.Generator().manual_seed(seed))(
            Data(pos=pos, mesh_pos=mesh))
        factor = out.pos[0] / pos[0]
        torch.testing.assert_close(out.pos, pos * factor)          # one factor per axis, all points
        torch.testing.assert_close(out.mesh_pos, mesh * factor)    # and the mesh moves alike
        factors.append(factor)
    factors = torch.stack(factors)
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 2.0 + 1e-6
    # uniform on [0.5, 2]: mean 1.25, sd 1.5 / sqrt(12) = 0.433 (standard error of the mean 0.01)
    torch.testing.assert_close(factors.mean(0), torch.full((3,), 1.25), atol=0.04, rtol=0)
    torch.testing.assert_close(factors.std(0), torch.full((3,), 1.5 / 12 ** 0.5), atol=0.03, rtol=0)
    assert factors.min() < 0.52 and factors.max() > 1.98
    again = RandomScale((0.5, 2.0), generator=torch.Generator().manual_seed(7))(Data(pos=pos)).pos
    torch.testing.assert_close(again, pos * factors[7])                # same seed, same draw
    iso = RandomScale((0.5, 2.0), anisotropic=False)(Data(pos=torch.ones(4, 3)))
    assert torch.unique(iso.pos).numel() == 1 and 0.5 <= float(iso.pos[0, 0]) <= 2.0
    with pytest.raises(ValueError, match="scales"):
        RandomScale((2.0, 1.0))
    with pytest.raises(ValueError, match="scales"):
        RandomScale((0.0, 1.0))


def test_random_shift_one_offset_uniform_in_range_and_global_seed():
    pos = torch.randn(10, 3)
    shifts = []
    for seed in range(2000):
        out = RandomShift(0.2, generator=torch.Generator().manual_seed(seed))(Data(pos=pos)).pos
        shift = out[0] - pos[0]
        torch.testing.assert_close(out, pos + shift)              # the same offset for every point
        shifts.append(shift)
    shifts = torch.stack(shifts)
    assert shifts.abs().max() <= 0.2 + 1e-6
    torch.testing.assert_close(shifts.mean(0), torch.zeros(3), atol=0.01, rtol=0)   # SE 0.0026
    torch.testing.assert_close(shifts.std(0), torch.full((3,), 0.4 / 12 ** 0.5), atol=0.01, rtol=0)
    torch.manual_seed(5)
    a = RandomShift(0.2)(Data(pos=pos)).pos
    torch.manual_seed(5)
    b = RandomShift(0.2)(Data(pos=pos)).pos
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="shift"):
        RandomShift(-1.0)


def test_jitter_clips_and_has_requested_sigma():
    pos = torch.zeros(20000, 3)
    clipped = Jitter(sigma=1.0, clip=0.05)(Data(pos=pos)).pos
    assert float(clipped.abs().max()) <= 0.05 + 1e-7
    assert float((clipped.abs() == 0.05).float().mean()) > 0.9  # N(0,1) exceeds 0.05 96% of the time
    free = Jitter(sigma=0.01, clip=None)(Data(pos=pos)).pos
    assert float(free.std()) == pytest.approx(0.01, rel=0.05)
    torch.testing.assert_close(Jitter(sigma=0.0)(Data(pos=pos)).pos, pos)
    with pytest.raises(ValueError, match="sigma"):
        Jitter(sigma=-0.1)
    with pytest.raises(ValueError, match="clip"):
        Jitter(clip=0.0)


def test_rotation_about_axis_hand_values():
    rz = rotation_about_axis(math.pi / 2, 2)
    torch.testing.assert_close(torch.tensor([1.0, 0.0, 0.0]) @ rz.T, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    ry = rotation_about_axis(math.pi / 2, 1)
    torch.testing.assert_close(torch.tensor([0.0, 0.0, 1.0]) @ ry.T, torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    rx = rotation_about_axis(math.pi / 2, 0)
    torch.testing.assert_close(torch.tensor([0.0, 1.0, 0.0]) @ rx.T, torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_random_rotate_up_keeps_up_coordinate(axis):
    pos = torch.randn(100, 3)
    mesh = torch.randn(7, 3)
    g = torch.Generator().manual_seed(11)
    out = RandomRotateUp(axis=axis, generator=g)(Data(pos=pos, mesh_pos=mesh))
    torch.testing.assert_close(out.pos[:, axis], pos[:, axis])
    torch.testing.assert_close(out.pos.norm(dim=1), pos.norm(dim=1))
    # The map is one rotation about `axis`, shared by the points and the mesh.
    rot = torch.linalg.lstsq(pos.double(), out.pos.double()).solution.T
    torch.testing.assert_close(rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert float(torch.linalg.det(rot)) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(rot[:, axis], torch.eye(3, dtype=torch.float64)[axis], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.mesh_pos.double(), mesh.double() @ rot.T, atol=1e-5, rtol=0)
    # Angles over many seeds: uniform on [-180, 180) degrees (mean 0 with SE 2.3, sd 360 / sqrt(12)).
    i, j = [k for k in range(3) if k != axis]
    e = torch.zeros(1, 3)
    e[0, i] = 1.0
    angles = []
    for seed in range(2000):
        turned = RandomRotateUp(axis=axis, generator=torch.Generator().manual_seed(seed))(Data(pos=e)).pos[0]
        angles.append(math.degrees(math.atan2(float(turned[j]), float(turned[i]))))
    angles = torch.tensor(angles)
    assert abs(float(angles.mean())) < 8.0 and float(angles.std()) == pytest.approx(360 / 12 ** 0.5, rel=0.05)
    assert not torch.allclose(out.pos, pos)
    torch.testing.assert_close(RandomRotateUp(axis=axis, degrees=0)(Data(pos=pos)).pos, pos)


def test_random_rotate_up_rejects_bad_axis():
    with pytest.raises(ValueError, match="axis"):
        RandomRotateUp(axis=3)


def test_sample_points_subsets_and_pads():
    pos = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    normal = pos * 2
    out = SamplePoints(6)(Data(pos=pos, normal=normal))
    assert out.pos.shape == (6, 3)
    rows = (out.pos[:, 0] / 3).long()
    assert rows.unique().numel() == 6  # without replacement
    torch.testing.assert_close(out.pos, pos[rows])
    torch.testing.assert_close(out.normal, normal[rows])
    padded = SamplePoints(25)(Data(pos=pos)).pos
    assert padded.shape == (25, 3)
    assert set((padded[:, 0] / 3).long().tolist()) == set(range(10))  # every point kept
    first = SamplePoints(4, mode="first")(Data(pos=pos)).pos
    torch.testing.assert_close(first, pos[:4])
    with pytest.raises(ValueError, match="num"):
        SamplePoints(0)
    with pytest.raises(ValueError, match="mode"):
        SamplePoints(3, mode="fps")


def _two_triangles():
    # Unit square in the z=0 plane split into triangles of area 1/8 and 3/8... plus a second square.
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [3, 0, 0], [4, 0, 0], [3, 3, 0]])
    f = torch.tensor([[0, 1, 2], [4, 5, 6]])  # areas 0.5 and 1.5
    return v, f


def test_sample_surface_is_area_weighted_and_on_the_faces():
    v, f = _two_triangles()
    pts = sample_surface(v, f, 20000, generator=torch.Generator().manual_seed(0))
    assert pts.shape == (20000, 3)
    assert torch.all(pts[:, 2] == 0)
    first = pts[:, 0] <= 1
    # Triangle (0,0)-(1,0)-(1,1): y <= x; second: x in [3, 4], y <= 3 * (4 - x) ... within bounds.
    assert torch.all(pts[first, 1] <= pts[first, 0] + 1e-6)
    assert torch.all((pts[~first, 0] >= 3) & (pts[~first, 0] <= 4))
    assert float(first.float().mean()) == pytest.approx(0.25, abs=0.015)
    again = sample_surface(v, f, 20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pts, again)
    with pytest.raises(ValueError, match="mesh_face"):
        sample_surface(v, torch.tensor([[0, 1, 9]]), 10)
    with pytest.raises(ValueError, match="mesh_face"):
        sample_surface(v, torch.tensor([0, 1, 2]), 10)


def test_sample_surface_transform_keeps_mesh():
    v, f = _two_triangles()
    out = SampleSurface(64)(Data(pos=torch.zeros(1, 3), mesh_pos=v, mesh_face=f, sample_id="a"))
    assert out.pos.shape == (64, 3) and out.mesh_pos is v
    with pytest.raises(ValueError, match="mesh"):
        SampleSurface(8)(Data(pos=torch.zeros(3, 3), sample_id="a"))
