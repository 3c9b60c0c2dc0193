"""The two-stage cascade: base stage -> plain tensor -> refiner, with one stage's components on the device at a time."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_
from test_refine_pipeline import random_refiner_folder

from i2vgen.errors import InputError
from i2vgen.models.tiny import random_components, write_model_folder
from i2vgen.pipelines.base import I2VGenPipeline
from i2vgen.pipelines.cascade import I2VGenCascadePipeline, generate_two_stage
from i2vgen.pipelines.refine import I2VGenRefinePipeline

BASE = {"num_frames": 3, "width": 16, "height": 16}
BASE_KW = {"num_inference_steps": 2, "negative_prompt": "blurry"}
REFINE_KW = {"num_inference_steps": 2}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("c")
    c = random_components(0)
    for i, m in enumerate((c.unet, c.vae, c.text_encoder, c.image_encoder)):
        randomize_(m, 10 + i, scale=0.1 if m is c.vae else 0.2)
    return write_model_folder(c, root / "base"), random_refiner_folder(root / "refiner", seed=4)


@pytest.fixture
def cascade(folders):
    return I2VGenCascadePipeline.from_pretrained(*folders)


@pytest.fixture
def image(real_data_dir):
    return f"{real_data_dir}/images/img_0001.jpg"


def _run(cascade, image, **kw):  # noqa: ANN001, ANN202
    return cascade(image, "a cat", refine_width=32, refine_height=24, generator=torch.Generator().manual_seed(0),
                   base_kwargs=BASE_KW, refine_kwargs=REFINE_KW, **BASE, **kw)


def test_one_stage_on_the_device_at_a_time(cascade, image, monkeypatch):
    base, refiner = cascade.base, cascade.refiner
    assert cascade.placement.offload and not base.placement.offload and not refiner.placement.offload
    active, entered, forwards = [], [], []
    use = cascade.placement.use

    def spy(module):  # noqa: ANN001, ANN202
        mods = set(map(id, module))
        stage = "base" if id(base.unet) in mods else "refiner"
        assert not active, "a stage was moved in while another was still on the device"
        entered.append((stage, mods))
        active.append(stage)
        cm = use(module)

        class Ctx:
            def __enter__(self):  # noqa: ANN204
                return cm.__enter__()

            def __exit__(self, *exc):  # noqa: ANN002, ANN204
                active.pop()
                return cm.__exit__(*exc)

        return Ctx()

    monkeypatch.setattr(cascade.placement, "use", spy)
    hooks = [base.unet.register_forward_pre_hook(lambda *a: forwards.append(("base", tuple(active)))),
             refiner.unet.register_forward_pre_hook(lambda *a: forwards.append(("refiner", tuple(active))))]
    try:
        out = _run(cascade, image)
    finally:
        for h in hooks:
            h.remove()
    assert out.shape == (1, 3, 24, 32, 3)
    assert [s for s, _ in entered] == ["base", "refiner"]
    assert entered[0][1] == set(map(id, base._modules())) and entered[1][1] == set(map(id, refiner._modules()))
    assert {f for f in forwards} == {("base", ("base",)), ("refiner", ("refiner",))}
    assert all(p.device.type == "cpu" for m in (*base._modules(), *refiner._modules()) for p in m.parameters())


def test_stage_boundary_is_a_plain_tensor_and_stages_run_alone(cascade, image, monkeypatch):
    seen = []
    call = I2VGenRefinePipeline.__call__

    def spy(self, video, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(video)
        return call(self, video, *args, **kwargs)

    monkeypatch.setattr(I2VGenRefinePipeline, "__call__", spy)
    out = _run(cascade, image)
    (video,) = seen
    assert type(video) is torch.Tensor and video.shape == (1, 3, 3, 16, 16) and video.device.type == "cpu"
    assert 0 <= video.min() and video.max() <= 1
    # the same two calls by hand, each stage alone, give the same video
    g = torch.Generator().manual_seed(0)
    frames = cascade.base(image, "a cat", generator=g, output_type="pt", **BASE, **BASE_KW)
    assert torch.equal(frames, video)
    by_hand = cascade.refiner(frames, "a cat", width=32, height=24, generator=g, **REFINE_KW)
    assert (by_hand == out).all()


def test_generate_two_stage_without_offload(folders, image):
    base = I2VGenPipeline.from_pretrained(folders[0])
    refiner = I2VGenRefinePipeline.from_pretrained(folders[1])
    out = generate_two_stage(base, refiner, image, "a cat", generator=torch.Generator().manual_seed(0),
                             base_kwargs={**BASE, **BASE_KW}, refine_kwargs={"width": 32, "height": 24, **REFINE_KW},
                             output_type="pt")
    assert out.shape == (1, 3, 3, 24, 32) and torch.isfinite(out).all()


def test_refine_settings_are_checked_before_the_base_stage(cascade, image):
    calls = []
    hook = cascade.base.unet.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(InputError, match="refine size 34x24"):
            cascade(image, "p", refine_width=34, refine_height=24, **BASE)
        with pytest.raises(InputError, match="strength"):
            cascade(image, "p", refine_width=32, refine_height=24, strength=1.5, **BASE)
    finally:
        hook.remove()
    assert not calls


def test_model_offload_option(folders):
    c = I2VGenCascadePipeline.from_pretrained(*folders, offload="model")
    assert c.placement is None and c.base.placement.offload and c.refiner.placement.offload
    with pytest.raises(ValueError, match="offload"):
        I2VGenCascadePipeline(c.base, c.refiner, offload="none")
