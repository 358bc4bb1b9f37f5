"""Encoders out of the way (``run.free_text_encoders``, ``run.embedding_cache``): the training and evaluation
prompts are encoded once, through a disk cache, then the text encoders are freed; runs log exactly the losses of
runs that keep their encoders, and the memory the encoders held is returned."""

import gc
import weakref

import pytest
import torch

from rtdmd.backbones.embedding_store import EmbeddingStore
from rtdmd.cli import main
from rtdmd.errors import UserError
from tests import regression
from tests.backbones.conftest import PROMPTS, build
from tests.backbones.image_reward import registered
from tests.backbones.test_stages import write_config


def parameter_bytes(modules) -> int:
    return sum(t.untyped_storage().nbytes() for t in {id(t): t for m in modules
                                                       for t in (*m.parameters(), *m.buffers())}.values())


def pipeline_modules(backbone) -> list[torch.nn.Module]:
    return [m for m in backbone.pipe.components.values() if isinstance(m, torch.nn.Module)]


@pytest.mark.parametrize("family", ["sd3", "flux1_dev", "flux2_klein"])
def test_freeing_returns_the_text_encoders_memory(family, folders, tmp_path):
    backbone = build(family, folders[family])
    encoders = [getattr(backbone.pipe, n) for n in backbone.text_encoder_names() if n.startswith("text_encoder")]
    encoders = [m for m in encoders if m is not None]
    expected = parameter_bytes(encoders)
    alive = [weakref.ref(m) for m in encoders]
    before = parameter_bytes(pipeline_modules(backbone))
    expected_rows = backbone.encode(PROMPTS)
    backbone._cache = type(backbone._cache)(backbone._encode, backbone.cfg.prompt_cache, backbone.device)
    del encoders
    backbone.precompute_embeddings([PROMPTS], cache_dir=str(tmp_path), free_text_encoders=True)
    gc.collect()
    assert expected > 0 and before - parameter_bytes(pipeline_modules(backbone)) == expected
    assert all(ref() is None for ref in alive)  # nothing else holds them: the memory is really returned
    rows = backbone.encode(PROMPTS)  # served from the cache
    for key in expected_rows:
        assert torch.equal(rows[key], expected_rows[key])
    with pytest.raises(UserError, match="was not encoded before run.free_text_encoders"):
        backbone.encode(["a prompt nobody encoded"])


def test_store_is_keyed_by_encoder_settings_and_written_atomically(folders, tmp_path):
    a = build("sd3", folders["sd3"])
    b = build("sd3", folders["sd3"], max_sequence_length=6)
    stores = [EmbeddingStore(tmp_path, x.embedding_key()) for x in (a, b, build("sd3", folders["sd3"]))]
    assert stores[0].folder != stores[1].folder and stores[0].folder == stores[2].folder
    a.precompute_embeddings([PROMPTS], cache_dir=str(tmp_path))
    files = sorted(p.name for p in stores[0].folder.iterdir())
    assert len([f for f in files if f.endswith(".safetensors")]) == len(PROMPTS) + 1  # and the empty prompt
    assert not any(f.endswith(".tmp") for f in files) and "key.json" in files
    fresh = build("sd3", folders["sd3"])
    fresh._cache._encode = None  # only the disk may answer now
    fresh.precompute_embeddings([PROMPTS], cache_dir=str(tmp_path))
    for key, value in a.encode(PROMPTS).items():
        assert torch.equal(fresh.encode(PROMPTS)[key], value)


@pytest.mark.integration
def test_runs_with_the_cache_log_the_same_losses(folders, tmp_path):
    config = write_config(tmp_path, "sd3", folders["sd3"])
    cached = ["--set", f"run.embedding_cache={tmp_path / 'embeddings'}", "--set", "run.free_text_encoders=true"]
    logged = {}
    with registered():
        for name, extra in (("plain", []), ("cache", cached), ("cache_again", cached)):
            out = tmp_path / name
            assert main(["distill", str(config), "--out", str(out / "s1"), *extra]) == 0
            assert main(["align", str(config), "--from", str(out / "s1"), "--out", str(out / "s2"), *extra]) == 0
            logged[name] = (regression.losses(out / "s1", "distill"), regression.losses(out / "s2", "align"))
    assert logged["plain"][0] and logged["plain"][1]
    assert logged["cache"] == logged["plain"] and logged["cache_again"] == logged["plain"]  # exactly
    assert len(list((tmp_path / "embeddings").rglob("*.safetensors"))) == 3 + 1 + 1  # train, eval and ""
