import pytest
import torch

from tests.backbones import tiny_pipelines as tiny

# Tiny models: one intra-op thread is faster than two (no spin-waiting), and leaves the second core to the
# processes that some tests spawn.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_pipelines")
    return {
        "sd3": tiny.sd3_pipeline(root / "sd3"),
        "sd3_pixel": tiny.sd3_pipeline(root / "sd3_pixel", pixel_space=True, with_t5=False),
        "flux1_dev": tiny.flux1_pipeline(root / "flux1_dev", guidance_embeds=True),
        "flux1_cfg": tiny.flux1_pipeline(root / "flux1_cfg", guidance_embeds=False),
        "flux2_klein": tiny.flux2_klein_pipeline(root / "flux2_klein"),
        "flux2_klein_distilled": tiny.flux2_klein_pipeline(root / "flux2_klein_distilled", is_distilled=True, seed=7),
    }
