"""mteb loads a saved pe model through the ``ModelMeta`` pe builds (issue 35, point 1):
``meta.load_model()`` and ``mteb.get_model`` give a working encoder, and ``mteb.evaluate``
files its results in mteb's own layout, which mteb reads back."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from pe_core.errors import MissingFileError

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = "PELocalDocstringRetrieval"


@pytest.fixture(scope="module", autouse=True)
def pe_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PE_CACHE", str(tmp_path_factory.mktemp("pe-cache")))
        yield


@pytest.fixture(scope="module")
def saved(tiny_folders, tmp_path_factory):
    import pe_core

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = pe_core.load("llama", model=str(tiny_folders["model"]),
                             prompting=str(tiny_folders["prompting"]), allow_untrained=True)
    return model, model.save(tmp_path_factory.mktemp("pe") / "tiny-pe")


def test_meta_of_a_saved_model_loads_it(saved):
    from pe_core.eval.mteb_encoder import MTEBEncoder, load_for_mteb, pe_model_meta

    model, folder = saved
    meta = pe_model_meta(folder)
    assert meta.name == "pe/tiny-pe" and meta.loader is load_for_mteb
    assert len(meta.revision) == 12 and pe_model_meta(folder).revision == meta.revision
    assert meta.embed_dim == model.dim and meta.max_tokens == model.config.max_length
    assert meta.similarity_fn_name == "cosine" and meta.use_instructions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = meta.load_model(device="cpu")
    assert isinstance(encoder, MTEBEncoder)
    assert encoder.mteb_model_meta.name == meta.name
    texts = ["open a file", "sum the numbers"]
    np.testing.assert_allclose(encoder.model.encode(texts, instruction="Find it"),
                               model.encode(texts, instruction="Find it"), atol=1e-6)


def test_meta_of_a_live_model_has_a_loader_only_with_a_source(saved):
    from pe_core.eval.mteb_encoder import load_for_mteb, model_meta_for

    model, folder = saved
    assert model_meta_for(model).loader is None  # nothing says where to load it from
    meta = model_meta_for(model, source=folder, name="pe/live")
    assert meta.loader is load_for_mteb and meta.loader_kwargs == {"source": str(folder)}
    assert meta.embed_dim == model.dim


def test_get_model_and_results_in_mtebs_format(saved, tmp_path):
    import mteb
    from mteb.cache import ResultCache

    from pe_core.eval import get_tasks
    from pe_core.eval.mteb_encoder import pe_model_meta, register

    _, folder = saved
    meta = register(pe_model_meta(folder, name="pe/tiny-registered"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = mteb.get_model("pe/tiny-registered", device="cpu")
        cache = ResultCache(tmp_path / "mteb")
        result = mteb.evaluate(encoder, get_tasks([TASK]), cache=cache,
                               show_progress_bar=False)
    score = result.task_results[0].get_score()
    assert 0.0 <= score <= 1.0
    # mteb's layout: results/<org>__<name>/<revision>/<task>.json and model_meta.json
    run = tmp_path / "mteb" / "results" / "pe__tiny-registered" / meta.revision
    assert (run / f"{TASK}.json").is_file()
    assert json.loads((run / "model_meta.json").read_text())["name"] == meta.name
    assert json.loads((run / "model_meta.json").read_text())["loader"] == "load_for_mteb"
    # ... and mteb reads them back as its own
    back = cache.load_results(models=[meta.name], tasks=[TASK], include_remote=False)
    (model_result,) = back.model_results
    assert model_result.task_results[0].get_score() == pytest.approx(score)


def test_meta_of_a_folder_without_pe_files_is_missing_file_error(tmp_path):
    from pe_core.eval.mteb_encoder import pe_model_meta

    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="alignment.safetensors"):
        pe_model_meta(tmp_path / "empty")
