"""Silhouette, shading and normal channels of the point renderer, against
exact planes, a naive z-buffer loop and the mesh renderer."""
import math

import numpy as np
import pytest
import torch

from pointcmt_pyg.render import CHANNELS, MeshRenderer, PointRenderer, RenderViews, estimate_normals
from pointcmt_pyg.render.cameras import view_frames, camera_directions
from pointcmt_pyg.render.points import _bbox_normalize

ALL = ("depth", "mask", "shading", "normal")


def _plane(normal, count, generator, dtype=torch.float64):
    """``count`` points uniform on a unit square through the origin, orthogonal to ``normal``."""
    n = torch.tensor(normal, dtype=dtype)
    n = n / n.norm()
    helper = torch.tensor([1.0, 0, 0], dtype=dtype) if abs(float(n[0])) < 0.9 else torch.tensor([0, 1.0, 0], dtype=dtype)
    e1 = torch.linalg.cross(n, helper)
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(n, e1)
    uv = torch.rand(count, 2, generator=generator, dtype=dtype) - 0.5
    return uv[:, :1] * e1 + uv[:, 1:] * e2, n


def _naive_normals(pos: torch.Tensor, k: int) -> np.ndarray:
    """Brute force: k nearest by distance (ties to the lower index), covariance, numpy eigh."""
    p = pos.double().numpy()
    out = np.zeros_like(p)
    for i in range(len(p)):
        d = ((p - p[i]) ** 2).sum(1)
        nb = np.argsort(d, kind="stable")[:k]
        q = p[nb] - p[nb].mean(0)
        out[i] = np.linalg.eigh(q.T @ q)[1][:, 0]
    return out


def test_estimate_normals_of_planes_are_exact_and_per_cloud():
    g = torch.Generator().manual_seed(0)
    normals = [(0.3, -0.2, 0.93), (1.0, 0.0, 0.0), (-0.5, 0.8, 0.1)]
    clouds, truth = zip(*[_plane(n, 300 + 50 * i, g) for i, n in enumerate(normals)])
    clouds = [c + 3.0 * i for i, c in enumerate(clouds)]            # clouds overlap after nothing
    pos = torch.cat(clouds)
    batch = torch.cat([torch.full((len(c),), i) for i, c in enumerate(clouds)])
    perm = torch.randperm(len(pos), generator=g)                     # an unsorted batch
    got = torch.empty_like(pos)
    got[perm] = estimate_normals(pos[perm], batch[perm], k=12)
    for i, n in enumerate(truth):
        dots = (got[batch == i] @ n).abs()
        torch.testing.assert_close(dots, torch.ones_like(dots), rtol=0, atol=1e-9)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(len(pos), dtype=pos.dtype))


@pytest.mark.parametrize("k", [5, 16, 400])   # 400: more neighbours than the cloud has
def test_estimate_normals_match_a_naive_loop(k):
    g = torch.Generator().manual_seed(k)
    pos = torch.randn(120, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.6, 0.3], dtype=torch.float64)
    got = estimate_normals(pos, k=k).numpy()
    ref = _naive_normals(pos, min(k, len(pos)))
    np.testing.assert_allclose(np.abs((got * ref).sum(1)), 1.0, atol=1e-9)
    f32 = estimate_normals(pos.float(), k=k)
    assert f32.dtype == torch.float32
    assert float((f32.double().numpy() * ref).sum(1).__abs__().min()) > 1 - 1e-3


def _naive_channels(pos, normals, size, splat, num_views):
    """Per view, per point, per splatted pixel: keep the nearest point, then
    encode its depth, mask, shading and normal as the renderers document."""
    frames, hw, dr = view_frames(camera_directions(num_views), up=2, padding=0.05)
    frames, hw, dr = frames.double(), hw.double(), dr.double()
    p = _bbox_normalize(pos, torch.zeros(len(pos), dtype=torch.long), 1)
    out = torch.zeros(num_views, 6, size, size, dtype=torch.float64)
    for v in range(num_views):
        h = float(hw[v])
        best = torch.full((size, size), math.inf, dtype=torch.float64)
        owner = torch.full((size, size), -1, dtype=torch.long)
        for i, q in enumerate(p):
            a, b, t = (frames[v] @ q).tolist()
            if abs(a) > h or abs(b) > h:
                continue
            depth = min(max((0.5 * float(dr[v]) - t) / float(dr[v]), 0.0), 1.0)
            col = min(math.floor((a + h) / (2 * h) * size), size - 1)
            row = min(math.floor((h - b) / (2 * h) * size), size - 1)
            for r in range(row - splat, row + splat + 1):
                for c in range(col - splat, col + splat + 1):
                    if 0 <= r < size and 0 <= c < size and depth < best[r, c]:
                        best[r, c], owner[r, c] = depth, i
        for r in range(size):
            for c in range(size):
                i = int(owner[r, c])
                if i < 0:
                    continue
                cam = frames[v] @ normals[i]
                sign = -1.0 if cam[2] < 0 else 1.0
                out[v, :, r, c] = torch.stack([
                    1 - best[r, c] / 2, torch.tensor(1.0, dtype=torch.float64),
                    0.2 + 0.8 * cam[2].abs(), (sign * cam[0] + 1) / 2, (sign * cam[1] + 1) / 2,
                    cam[2].abs()])
    return out


@pytest.mark.parametrize("splat", [0, 1, 2])
def test_channels_match_a_naive_zbuffer_loop(splat):
    g = torch.Generator().manual_seed(10 + splat)
    pos = torch.randn(60, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    renderer = PointRenderer(num_views=6, image_size=10, splat=splat, channels=ALL, normal_k=8)
    got = renderer(pos)
    assert got.shape == (1, 6, 6, 10, 10) and got.dtype == torch.float64
    assert renderer.num_channels == 6 == sum(CHANNELS[c] for c in ALL)
    normals = estimate_normals(_bbox_normalize(pos, torch.zeros(60, dtype=torch.long), 1), k=8)
    ref = _naive_channels(pos, normals, 10, splat, 6)
    torch.testing.assert_close(got[0], ref, rtol=0, atol=1e-12)


def test_depth_channel_is_the_depth_render_bit_for_bit_and_batched_equals_per_shape():
    torch.manual_seed(0)
    counts = [37, 200, 1, 64]
    clouds = [torch.randn(n, 3) * torch.rand(3) + torch.randn(3) for n in counts]
    pos = torch.cat(clouds)
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)])
    perm = torch.randperm(pos.size(0))
    for splat in (0, 1, 2):
        depth_only = PointRenderer(num_views=6, image_size=24, splat=splat)(pos[perm], batch[perm])
        renderer = PointRenderer(num_views=6, image_size=24, splat=splat,
                                 channels=("shading", "depth", "mask", "normal"))
        together = renderer(pos[perm], batch[perm])
        assert together.shape == (4, 6, 6, 24, 24)
        assert torch.equal(together[:, :, 1:2], depth_only)
        assert torch.equal(together[:, :, 2:3], (depth_only > 0).float())
        # shading is at least 0.2 on every hit pixel (a normal plane may be 0 there)
        assert torch.equal(together[:, :, 0] > 0, depth_only[:, :, 0] > 0)
        for i, cloud in enumerate(clouds):
            assert torch.equal(together[i], renderer(cloud)[0])


def test_a_tilted_plane_is_shaded_by_lambert_in_every_view():
    g = torch.Generator().manual_seed(1)
    pos, n = _plane((math.sin(0.6), 0.0, math.cos(0.6)), 20000, g, dtype=torch.float32)
    renderer = PointRenderer(num_views=6, image_size=32, channels=("shading", "normal"))
    views = renderer(pos)[0]                                             # [6, 4, 32, 32]
    for v in range(6):
        cam = renderer.frames[v].to(n.dtype) @ n
        hit = views[v, 0] > 0
        assert hit.any()
        expected = 0.2 + 0.8 * abs(float(cam[2]))
        torch.testing.assert_close(views[v, 0][hit], torch.full_like(views[v, 0][hit], expected),
                                   rtol=0, atol=1e-5)
        sign = 1.0 if cam[2] >= 0 else -1.0
        for c, value in ((1, (sign * cam[0] + 1) / 2), (2, (sign * cam[1] + 1) / 2), (3, cam[2].abs())):
            if abs(float(cam[2])) > 1e-3:                               # edge-on views: sign undefined
                torch.testing.assert_close(views[v, c][hit], torch.full_like(views[v, c][hit], float(value)),
                                           rtol=0, atol=1e-5)


def test_points_and_mesh_shading_agree_on_a_sphere():
    pytest.importorskip("open3d")
    from pointcmt_pyg.datasets.synthetic import ellipsoid
    from pointcmt_pyg.datasets.transforms import sample_surface
    verts, faces = ellipsoid((0.5, 0.5, 0.5), seg=48)
    verts, faces = torch.from_numpy(verts), torch.from_numpy(faces)
    pts = sample_surface(verts.float(), faces, 20000, generator=torch.Generator().manual_seed(0))
    mesh = MeshRenderer(num_views=6, image_size=32, channels=("shading", "normal", "mask"))(verts, faces)
    # splat 0: a pixel shows the nearest sample inside it (about 12 per pixel here);
    # the mesh shows its faceted surface at the pixel centre, so they differ near the rim
    points = PointRenderer(num_views=6, image_size=32, splat=0, channels=("shading", "normal", "mask"))(pts)[0]
    both = (mesh[:, 4] > 0) & (points[:, 4] > 0)
    assert torch.equal(both, mesh[:, 4] > 0) and both.sum() > 4000
    diff = (points[:, :4] - mesh[:, :4]).abs().permute(1, 0, 2, 3)[:, both]     # [4, pixels]
    assert float(diff.mean()) < 0.05, float(diff.mean())
    assert float(diff.quantile(0.9)) < 0.1, float(diff.quantile(0.9))


def test_render_views_gives_point_clouds_every_channel_and_keeps_depth_cache_keys(tmp_path):
    from torch_geometric.data import Data
    pos = torch.rand(300, 3, generator=torch.Generator().manual_seed(0))
    depth = RenderViews(num_views=6, image_size=16)
    shaded = RenderViews(num_views=6, image_size=16, channels=("depth", "shading"), cache_dir=tmp_path)
    assert "channels" not in depth.config["points"]             # depth-only keys as before
    assert shaded.config_hash != depth.config_hash
    views = shaded(Data(pos=pos, sample_id="a")).views
    assert views.shape == (1, 6, 2, 16, 16)
    assert torch.equal(views[0, :, :1], depth(Data(pos=pos, sample_id="a")).views[0])
    again = RenderViews(num_views=6, image_size=16, channels=("depth", "shading"),
                        cache_dir=tmp_path)(Data(pos=pos, sample_id="a")).views
    assert torch.equal(again, views)


def test_bad_channels_and_normal_k_name_the_argument():
    for bad in (("colour",), (), ("depth", "depth"), 3):
        with pytest.raises(ValueError, match="channels must"):
            PointRenderer(channels=bad)
    with pytest.raises(ValueError, match="channels must"):
        RenderViews(channels=("shade",))
    with pytest.raises(ValueError, match="normal_k"):
        PointRenderer(channels=("shading",), normal_k=0)
    with pytest.raises(ValueError, match="k must"):
        estimate_normals(torch.rand(5, 3), k=0)
    with pytest.raises(ValueError, match=r"pos must be a floating-point \[N, 3\]"):
        estimate_normals(torch.rand(5, 2))
    assert estimate_normals(torch.zeros(0, 3)).shape == (0, 3)


def test_pipeline_view_channels_set_the_views_and_the_teacher_planes():
    from pointcmt_pyg.pipeline import PipelineConfig, num_view_planes, teacher_transforms
    from torch_geometric.data import Data
    cfg = PipelineConfig(view_channels="depth,shading").resolved()
    assert num_view_planes(cfg) == 2 and num_view_planes(PipelineConfig(view_channels="normal, mask")) == 4
    views = teacher_transforms(cfg)(Data(pos=torch.rand(200, 3), y=torch.tensor([0]))).views
    assert views.shape == (1, 6, 2, 64, 64)
    # recorded with the stages it changes, and only when not the default (old runs keep their keys)
    assert cfg.settings("teacher")["view_channels"] == "depth,shading"
    assert "view_channels" not in cfg.settings("baseline")
    assert "view_channels" not in PipelineConfig().resolved().settings("teacher")
    for bad in ("depth,colour", "", "depth,depth"):
        with pytest.raises(ValueError, match="view_channels must be"):
            PipelineConfig(view_channels=bad).resolved()
