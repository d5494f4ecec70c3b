"""Tests of pointcmt_pyg.nn.teacher: MultiViewTeacher, first-conv adaptation, files."""
import pytest
import torch
import torch.nn.functional as F

from pointcmt_pyg.nn.teacher import (MultiViewTeacher, adapt_first_conv, load_teacher,
                                     save_teacher)


def test_features_are_the_max_over_per_view_features():
    torch.manual_seed(0)
    teacher = MultiViewTeacher(num_classes=5).eval()
    assert teacher.feat_dim == 512 and teacher.head.in_features == 512
    assert teacher.head.out_features == 5 and teacher.backbone.conv1.in_channels == 1
    views = torch.rand(3, 4, 1, 32, 32)
    with torch.no_grad():
        feat = teacher.features(views)
        per_view = torch.stack([teacher.backbone(views[:, v]) for v in range(4)], dim=1)
        logits = teacher(views)
        permuted = teacher.features(views[:, torch.tensor([2, 0, 3, 1])])
    assert feat.shape == (3, 512) and logits.shape == (3, 5)
    torch.testing.assert_close(feat, per_view.max(dim=1).values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(permuted, feat, rtol=1e-5, atol=1e-6)   # order of views is irrelevant
    torch.testing.assert_close(logits, teacher.head(feat))
    # max pooling: every feature entry is attained by one of the views
    hit = (per_view - feat[:, None]).abs().amin(dim=1)
    assert hit.max() < 1e-5


@pytest.mark.parametrize("backbone,in_channels,feat_dim", [("resnet34", 3, 512),
                                                          ("resnet50", 2, 2048),
                                                          ("resnet18_w16", 1, 128)])
def test_other_backbones_and_channels(backbone, in_channels, feat_dim):
    teacher = MultiViewTeacher(3, backbone=backbone, in_channels=in_channels)
    assert teacher.feat_dim == feat_dim and teacher.backbone.conv1.in_channels == in_channels
    with torch.no_grad():
        assert teacher.eval()(torch.rand(2, 2, in_channels, 32, 32)).shape == (2, 3)


def test_narrow_resnet18_is_resnet18_at_a_quarter_of_the_channels(tmp_path):
    """SimpleView's lighter backbone: the stage widths are 16-32-64-128, the
    block structure is ResNet-18's, and the teacher saves and reloads it."""
    from pointcmt_pyg.nn.teacher import narrow_resnet18
    import torchvision
    narrow, full = narrow_resnet18(16), torchvision.models.resnet18()
    widths = [layer[-1].conv2.out_channels for layer in (narrow.layer1, narrow.layer2,
                                                          narrow.layer3, narrow.layer4)]
    assert widths == [16, 32, 64, 128]
    # same modules, layer by layer, only narrower
    kinds = lambda net: [type(m).__name__ for m in net.modules()]
    assert kinds(narrow) == kinds(full)
    count = lambda net: sum(p.numel() for name, p in net.named_parameters() if not name.startswith("fc"))
    assert 0.6e6 < count(narrow) < 0.8e6 and abs(count(narrow) * 16 / count(full) - 1) < 0.05
    torch.manual_seed(0)
    teacher = MultiViewTeacher(5, backbone="resnet18_w16")
    teacher.train()(torch.rand(2, 3, 1, 32, 32))
    teacher.eval()
    loaded = load_teacher(save_teacher(teacher, tmp_path / "t.pt"))
    views = torch.rand(2, 3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(views), teacher(views))
    with pytest.raises(ValueError, match="no pretrained weights"):
        MultiViewTeacher(5, backbone="resnet18_w16", weights="IMAGENET1K_V1")


def test_adapt_first_conv_keeps_the_response_to_grey_images():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=True)
    grey = torch.rand(2, 1, 9, 9)
    new = adapt_first_conv(conv, 1)
    assert new.in_channels == 1 and new is not conv
    torch.testing.assert_close(new(grey), conv(grey.expand(-1, 3, -1, -1)), rtol=1e-5, atol=1e-5)
    two = adapt_first_conv(conv, 2)
    torch.testing.assert_close(two(grey.expand(-1, 2, -1, -1)), conv(grey.expand(-1, 3, -1, -1)),
                               rtol=1e-5, atol=1e-5)
    assert adapt_first_conv(conv, 3) is conv


def _synthetic_views(n_per_class=8, views=2, size=32, seed=0):
    """Class 0: a bright centred square; class 1: a bright ring at the border (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    imgs, labels = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            img = torch.rand(views, 1, size, size, generator=g) * 0.3
            if label == 0:
                img[..., 10:22, 10:22] += 0.7
            else:
                img[..., :4, :] += 0.7
                img[..., -4:, :] += 0.7
            imgs.append(img)
            labels.append(label)
    return torch.stack(imgs), torch.tensor(labels)


def test_teacher_loss_falls_on_a_tiny_synthetic_set():
    torch.manual_seed(0)
    views, labels = _synthetic_views(n_per_class=4)
    teacher = MultiViewTeacher(num_classes=2)
    opt = torch.optim.AdamW(teacher.parameters(), lr=1e-4)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(teacher(views), labels, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    # (train mode: after five steps the batch-norm running statistics are not settled yet)
    with torch.no_grad():
        assert (teacher(views).argmax(1) == labels).float().mean() == 1.0


def test_save_load_roundtrip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    teacher = MultiViewTeacher(num_classes=4, in_channels=2)
    # move the batch-norm running statistics away from their defaults
    teacher.train()(torch.rand(2, 3, 2, 32, 32))
    teacher.eval()
    path = save_teacher(teacher, tmp_path / "runs" / "teacher.pt")
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == ["teacher.pt"]
    loaded = load_teacher(path)
    assert isinstance(loaded, MultiViewTeacher) and not loaded.training
    assert loaded.config() == {"num_classes": 4, "backbone": "resnet18", "in_channels": 2}
    views = torch.rand(2, 3, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(views), teacher(views))
        assert torch.equal(loaded.features(views), teacher.features(views))


def test_teacher_bad_inputs(tmp_path):
    teacher = MultiViewTeacher(num_classes=2)
    with pytest.raises(ValueError, match=r"5 dimensions \[B, V, C, H, W\]"):
        teacher(torch.rand(4, 1, 32, 32))
    with pytest.raises(ValueError, match="3 channels .* in_channels=1"):
        teacher(torch.rand(2, 4, 3, 32, 32))
    with pytest.raises(TypeError, match="views must be a tensor"):
        teacher.features([[1.0]])
    with pytest.raises(ValueError, match="backbone must be a torchvision ResNet"):
        MultiViewTeacher(2, backbone="vgg16")
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        MultiViewTeacher(0)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        MultiViewTeacher(2, in_channels=0)
    with pytest.raises(TypeError, match="must be a MultiViewTeacher"):
        save_teacher(torch.nn.Linear(2, 2), tmp_path / "x.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a MultiViewTeacher file"):
        load_teacher(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_teacher(tmp_path / "missing.pt")
